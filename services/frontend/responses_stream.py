"""Chat completion chunks -> the typed events of a /v1/responses stream.

One output item is open at a time: reasoning deltas open a reasoning item, content deltas a
message (with one output_text part), each new tool call index a function_call item. Opening
an item closes the one before it with its *.done events; the end of the stream closes the
last and sends response.completed (or response.failed when the chat stream failed).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import msgspec

from services.frontend.responses_api import (
    ResponsesRequest,
    call_item,
    from_chat,
    message_item,
    new_id,
    reasoning_item,
    response_object,
    sse_chunks,
    text_part,
)
from shared.http import Response, StreamingResponse

_json = msgspec.json.Encoder()


class _Open:
    """The item being streamed: its kind, id, index in the output, text so far."""

    def __init__(self, kind: str, item_id: str, index: int, call_id: str = "", name: str = "") -> None:
        self.kind, self.id, self.index, self.call_id, self.name = kind, item_id, index, call_id, name
        self.text = ""


class ResponseEvents:
    """Feed chat chunks (decoded JSON); each call returns the SSE bytes of the events they make."""

    def __init__(self, req: ResponsesRequest) -> None:
        self.req = req
        self.rid, self.created = new_id("resp"), int(time.time())
        self.seq = 0
        self.output: list[dict[str, Any]] = []
        self.open: _Open | None = None
        self.call_index: int | None = None
        self.finish_reason: str | None = None
        self.usage: dict[str, Any] | None = None

    def start(self) -> bytes:
        snapshot = response_object(self.req, self.rid, self.created, [], None, None, "in_progress")
        return self._event("response.created", response=snapshot) + \
            self._event("response.in_progress", response=snapshot)

    def feed(self, chunk: dict[str, Any]) -> bytes:
        if chunk.get("usage"):
            self.usage = chunk["usage"]
        out = b""
        for choice in chunk.get("choices") or []:
            delta = choice.get("delta") or {}
            if delta.get("reasoning_content"):
                out += self._delta("reasoning", delta["reasoning_content"])
            if delta.get("content"):
                out += self._delta("message", delta["content"])
            for call in delta.get("tool_calls") or []:
                out += self._call_delta(call)
            if choice.get("finish_reason"):
                self.finish_reason = choice["finish_reason"]
        return out

    def finish(self, error: dict[str, Any] | None = None) -> bytes:
        out = self._close()
        status = "failed" if error else "completed"
        final = response_object(self.req, self.rid, self.created, self.output, self.finish_reason, self.usage,
                                status)
        if error:
            final["error"] = {"code": error.get("code") or "server_error", "message": error.get("message", "")}
            return out + self._event("error", code=final["error"]["code"], message=final["error"]["message"],
                                     param=None) + self._event("response.failed", response=final)
        # also when the status is "incomplete": the openai client's stream helpers wait for response.completed
        return out + self._event("response.completed", response=final)

    # ---- items ---------------------------------------------------------------------------
    def _delta(self, kind: str, text: str) -> bytes:
        out = b""
        if self.open is None or self.open.kind != kind:
            out += self._close() + self._begin(_Open(kind, new_id("rs" if kind == "reasoning" else "msg"),
                                                     len(self.output)))
        assert self.open is not None
        self.open.text += text
        name = "response.reasoning_text.delta" if kind == "reasoning" else "response.output_text.delta"
        extra = {} if kind == "reasoning" else {"logprobs": []}
        return out + self._event(name, item_id=self.open.id, output_index=self.open.index, content_index=0,
                                 delta=text, **extra)

    def _call_delta(self, call: dict[str, Any]) -> bytes:
        out = b""
        fn = call.get("function") or {}
        index = call.get("index", 0)
        if self.open is None or self.open.kind != "function_call" or index != self.call_index:
            self.call_index = index
            out += self._close() + self._begin(_Open("function_call", new_id("fc"), len(self.output),
                                                     call.get("id") or new_id("call"), fn.get("name") or ""))
        assert self.open is not None
        if not fn.get("arguments"):
            return out
        self.open.text += fn["arguments"]
        return out + self._event("response.function_call_arguments.delta", item_id=self.open.id,
                                 output_index=self.open.index, delta=fn["arguments"])

    def _begin(self, item: _Open) -> bytes:
        self.open = item
        if item.kind == "reasoning":
            added = {"type": "reasoning", "id": item.id, "summary": [], "content": [], "status": "in_progress"}
        elif item.kind == "message":
            added = message_item(item.id, None)
        else:
            added = call_item(item.id, item.call_id, item.name, "", "in_progress")
        out = self._event("response.output_item.added", output_index=item.index, item=added)
        if item.kind != "function_call":
            part = text_part("") if item.kind == "message" else {"type": "reasoning_text", "text": ""}
            out += self._event("response.content_part.added", item_id=item.id, output_index=item.index,
                               content_index=0, part=part)
        return out

    def _close(self) -> bytes:
        item, self.open = self.open, None
        if item is None:
            return b""
        where = {"item_id": item.id, "output_index": item.index}
        if item.kind == "function_call":
            done = call_item(item.id, item.call_id, item.name, item.text)
            out = self._event("response.function_call_arguments.done", **where, arguments=item.text)
        else:
            reasoning = item.kind == "reasoning"
            done = reasoning_item(item.id, item.text) if reasoning else message_item(item.id, item.text)
            part = {"type": "reasoning_text", "text": item.text} if reasoning else text_part(item.text)
            out = self._event("response.reasoning_text.done" if reasoning else "response.output_text.done",
                              **where, content_index=0, text=item.text, **({} if reasoning else {"logprobs": []}))
            out += self._event("response.content_part.done", **where, content_index=0, part=part)
        self.output.append(done)
        return out + self._event("response.output_item.done", output_index=item.index, item=done)

    def _event(self, kind: str, **fields: Any) -> bytes:
        self.seq += 1
        payload = _json.encode({"type": kind, "sequence_number": self.seq - 1, **fields})
        return b"event: " + kind.encode() + b"\ndata: " + payload + b"\n\n"


async def translate(req: ResponsesRequest, chunks: AsyncIterator[dict[str, Any]]) -> AsyncIterator[bytes]:
    """The response stream for a chat stream's chunks."""
    events = ResponseEvents(req)
    yield events.start()
    async for chunk in chunks:
        if "error" in chunk:
            yield events.finish(chunk["error"])
            return
        if out := events.feed(chunk):
            yield out
    yield events.finish()


def answer(req: ResponsesRequest, chat: Response | StreamingResponse) -> Response | StreamingResponse:
    """The /v1/responses answer for the chat path's answer to `to_chat(req)` (errors pass through)."""
    if isinstance(chat, StreamingResponse):
        return StreamingResponse(chat.status, _stream(req, chat.chunks), headers=chat.headers)
    if chat.status != 200:
        return chat
    return Response(200, _json.encode(from_chat(req, msgspec.json.decode(chat.body))), headers=chat.headers)


async def _stream(req: ResponsesRequest, raw: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    try:
        async for out in translate(req, sse_chunks(raw)):
            yield out
    finally:
        aclose = getattr(raw, "aclose", None)
        if aclose is not None:
            await aclose()  # the chat stream counts the request out and cancels the engine request
