"""Steps -> Anthropic Messages: a whole `message`, or the event stream the official SDK reads.

    message_start, ping,
    (content_block_start, content_block_delta* (text_delta | thinking_delta | input_json_delta),
     content_block_stop)*,
    message_delta (stop_reason, stop_sequence, usage), message_stop

One content block is open at a time: reasoning steps open a thinking block, text steps a
text block, each new tool call index a tool_use block. `input_tokens` is the whole prompt
(as /v1/messages/count_tokens says); cache reads are reported beside it.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from protocol.messages import Usage
from services.frontend.http_errors import json_encoder
from services.frontend.messages_api import ANTHROPIC_ERROR_TYPES, MessagesRequest, anthropic_error, error_body
from services.frontend.pipeline import Job
from services.frontend.render import Message
from services.frontend.steps import ErrorStep, FinishStep, Frame, ReasoningStep, TextStep, ToolCallStep, UsageStep
from shared.http import Response


def stop_reason(finish: FinishStep | None, had_calls: bool) -> str | None:
    if finish is None:
        return None
    if finish.reason == "length":
        return "max_tokens"
    if had_calls:
        return "tool_use"
    return "stop_sequence" if finish.stop_sequence is not None else "end_turn"


def _usage(u: Usage) -> dict[str, int]:
    return {"input_tokens": u.prompt_tokens, "output_tokens": u.completion_tokens,
            "cache_read_input_tokens": u.cached_tokens, "cache_creation_input_tokens": 0}


def _input(arguments: str) -> Any:
    try:
        return json.loads(arguments) if arguments else {}
    except ValueError:
        return {}


class MessagesRenderer:
    def __init__(self, job: Job, req: MessagesRequest) -> None:
        self.id = job.request_id  # the engine request's id, as the OpenAI routes answer
        self.model = req.model
        self.prompt_tokens = job.prepared.prompt_tokens

    def error(self, step: ErrorStep) -> Response:
        return anthropic_error(step)

    def _message(self, content: list[dict[str, Any]], finish: FinishStep | None, had_calls: bool,
                 usage: Usage) -> dict[str, Any]:
        return {"id": self.id, "type": "message", "role": "assistant", "model": self.model, "content": content,
                "stop_reason": stop_reason(finish, had_calls),
                "stop_sequence": finish.stop_sequence if finish is not None else None, "usage": _usage(usage)}

    async def whole(self, frames: AsyncIterator[Frame]) -> Response:
        m, finish, usage = Message(), None, Usage(self.prompt_tokens)
        async for frame in frames:
            for step in frame:
                if isinstance(step, ErrorStep):
                    return anthropic_error(step)
                if isinstance(step, FinishStep):
                    finish = step
                elif isinstance(step, UsageStep):
                    usage = usage if step.running else step.usage
                else:
                    m.add(step)
        content: list[dict[str, Any]] = []
        if m.reasoning:
            content.append({"type": "thinking", "thinking": m.reasoning, "signature": ""})
        if m.text:
            content.append({"type": "text", "text": m.text})
        content += [{"type": "tool_use", "id": c.id, "name": c.name, "input": _input(c.arguments)}
                    for _, c in sorted(m.calls.items())]
        return Response(200, json_encoder.encode(self._message(content, finish, bool(m.calls), usage)))

    async def stream(self, frames: AsyncIterator[Frame]) -> AsyncIterator[bytes]:
        try:
            events = _Events()
            start = self._message([], None, False, Usage(self.prompt_tokens))
            yield events.event("message_start", message=start) + events.event("ping")
            finish: FinishStep | None = None
            out = b""  # the finishing frame's events go out with the message's end, in one write
            async for frame in frames:
                for step in frame:
                    if isinstance(step, ErrorStep):
                        kind = ANTHROPIC_ERROR_TYPES.get(step.status, "api_error")
                        yield out + events.raw("error", error_body(kind, step.message))
                        return
                    if isinstance(step, ReasoningStep):
                        out += events.delta("thinking", {"type": "thinking_delta", "thinking": step.text})
                    elif isinstance(step, TextStep):
                        out += events.delta("text", {"type": "text_delta", "text": step.text})
                    elif isinstance(step, ToolCallStep):
                        out += events.call(step)
                    elif isinstance(step, FinishStep):
                        finish = step
                    elif isinstance(step, UsageStep) and not step.running:
                        out += events.close() + events.event(
                            "message_delta", delta={"stop_reason": stop_reason(finish, events.calls > 0),
                                                    "stop_sequence": finish.stop_sequence if finish else None},
                            usage=_usage(step.usage)) + events.event("message_stop")
                if out and finish is None:
                    yield out
                    out = b""
            if out:
                yield out
        finally:
            await frames.aclose()  # type: ignore[attr-defined]  # the request ends with its stream


class _Events:
    """The open content block (its kind and index) and how many tool calls were opened."""

    def __init__(self) -> None:
        self.kind: str | None = None
        self.call_index: int | None = None
        self.index = -1
        self.calls = 0

    def delta(self, kind: str, delta: dict[str, Any]) -> bytes:
        out = b""
        if self.kind != kind:
            block = {"type": "text", "text": ""} if kind == "text" else \
                {"type": "thinking", "thinking": "", "signature": ""}
            out = self._open(kind, block)
        return out + self.event("content_block_delta", index=self.index, delta=delta)

    def call(self, step: ToolCallStep) -> bytes:
        out = b""
        if self.kind != "tool_use" or step.index != self.call_index:
            self.call_index = step.index
            self.calls += 1
            out = self._open("tool_use", {"type": "tool_use", "id": step.id or "", "name": step.name or "",
                                          "input": {}})
        if step.arguments_fragment:
            out += self.event("content_block_delta", index=self.index,
                              delta={"type": "input_json_delta", "partial_json": step.arguments_fragment})
        return out

    def _open(self, kind: str, block: dict[str, Any]) -> bytes:
        out = self.close()
        self.kind, self.index = kind, self.index + 1
        return out + self.event("content_block_start", index=self.index, content_block=block)

    def close(self) -> bytes:
        if self.kind is None:
            return b""
        self.kind = None
        return self.event("content_block_stop", index=self.index)

    def event(self, kind: str, **fields: Any) -> bytes:
        return self.raw(kind, {"type": kind, **fields})

    @staticmethod
    def raw(kind: str, payload: dict[str, Any]) -> bytes:
        return b"event: " + kind.encode() + b"\ndata: " + json_encoder.encode(payload) + b"\n\n"
