"""Steps -> /v1/responses: a whole `response` object, or the typed events of a response stream.

One output item is open at a time: reasoning steps open a reasoning item, text steps a
message (with one output_text part), each new tool call index a function_call item. Opening
an item closes the one before it with its *.done events; the end of the stream closes the
last and sends response.completed (or response.failed when the request failed).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import msgspec

from protocol.messages import Usage
from services.frontend.http_errors import openai_error
from services.frontend.pipeline import Job
from services.frontend.render import Message
from services.frontend.responses_api import (
    ResponsesRequest,
    call_item,
    message_item,
    new_id,
    reasoning_item,
    response_object,
    text_part,
)
from services.frontend.steps import (
    ErrorStep,
    FinishStep,
    Frame,
    ReasoningStep,
    TextStep,
    ToolCallStep,
    UsageStep,
)
from shared.http import Response

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
        self.usage: Usage | None = None

    def start(self) -> bytes:
        snapshot = response_object(self.req, self.rid, self.created, [], None, None, "in_progress")
        return self._event("response.created", response=snapshot) + \
            self._event("response.in_progress", response=snapshot)

    def feed(self, frame: Frame) -> bytes:
        out = b""
        for step in frame:
            if step.choice != 0:
                continue
            if isinstance(step, ReasoningStep):
                out += self._delta("reasoning", step.text)
            elif isinstance(step, TextStep):
                out += self._delta("message", step.text)
            elif isinstance(step, ToolCallStep):
                out += self._call_delta(step)
            elif isinstance(step, FinishStep):
                self.finish_reason = step.reason
            elif isinstance(step, UsageStep) and not step.running:
                self.usage = step.usage
        return out

    def finish(self, error: ErrorStep | None = None) -> bytes:
        out = self._close()
        status = "failed" if error else "completed"
        final = response_object(self.req, self.rid, self.created, self.output, self.finish_reason, self.usage,
                                status)
        if error:
            final["error"] = {"code": error.code or "server_error", "message": error.message}
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

    def _call_delta(self, step: ToolCallStep) -> bytes:
        out = b""
        if self.open is None or self.open.kind != "function_call" or step.index != self.call_index:
            self.call_index = step.index
            out += self._close() + self._begin(_Open("function_call", new_id("fc"), len(self.output),
                                                     step.id or new_id("call"), step.name or ""))
        assert self.open is not None
        if not step.arguments_fragment:
            return out
        self.open.text += step.arguments_fragment
        return out + self._event("response.function_call_arguments.delta", item_id=self.open.id,
                                 output_index=self.open.index, delta=step.arguments_fragment)

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


class ResponsesRenderer:
    """One choice (Responses has no `n`) as a response object or its event stream."""

    def __init__(self, job: Job, req: ResponsesRequest) -> None:
        self.req = req

    def error(self, step: ErrorStep) -> Response:
        return openai_error(step)

    async def whole(self, frames: AsyncIterator[Frame]) -> Response:
        m, reason, usage = Message(), None, None
        async for frame in frames:
            for step in frame:
                if isinstance(step, ErrorStep):
                    return openai_error(step)
                if isinstance(step, FinishStep):
                    reason = step.reason
                elif isinstance(step, UsageStep):
                    usage = usage if step.running else step.usage
                else:
                    m.add(step)
        output = []
        if m.reasoning:
            output.append(reasoning_item(new_id("rs"), m.reasoning))
        if m.text:
            output.append(message_item(new_id("msg"), m.text))
        output += [call_item(new_id("fc"), c.id or new_id("call"), c.name, c.arguments)
                   for _, c in sorted(m.calls.items())]
        body = response_object(self.req, new_id("resp"), int(time.time()), output, reason, usage)
        return Response(200, _json.encode(body))

    async def stream(self, frames: AsyncIterator[Frame]) -> AsyncIterator[bytes]:
        try:
            events = ResponseEvents(self.req)
            yield events.start()
            held = b""  # the finishing frame's events go out with the end of the response, in one write
            async for frame in frames:
                if frame and isinstance(frame[0], ErrorStep):
                    yield held + events.finish(frame[0])
                    return
                held += events.feed(frame)
                if held and not any(isinstance(step, (FinishStep, UsageStep)) for step in frame):
                    yield held
                    held = b""
            yield held + events.finish()
        finally:
            await frames.aclose()  # type: ignore[attr-defined]  # the request ends with its stream
