"""What a front door is: a request shape in, a renderer of the one step stream out.

    class Renderer(Protocol):
        def error(self, step) -> Response                  # this API's error shape (before the first token)
        async def whole(self, frames) -> Response          # a non-streamed answer
        def stream(self, frames) -> AsyncIterator[bytes]   # this API's events

`respond` runs a started request through a renderer and puts the worker header on it.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Protocol

from protocol.messages import Usage
from services.frontend.http_errors import SSE_DONE, WORKER_HEADER, sse_error_step
from services.frontend.pipeline import Run
from services.frontend.steps import ErrorStep, Frame, ReasoningStep, TextStep, ToolCallStep, UsageStep
from shared.http import Response, StreamingResponse


class Renderer(Protocol):
    def error(self, step: ErrorStep) -> Response: ...

    async def whole(self, frames: AsyncIterator[Frame]) -> Response: ...

    def stream(self, frames: AsyncIterator[Frame]) -> AsyncIterator[bytes]: ...


async def respond(renderer: Renderer, run: Run, stream: bool) -> Response | StreamingResponse:
    """The answer; a renderer's stream closes its frames (the request counted out, its engine requests
    cancelled) however the client's stream ends."""
    worker = [(WORKER_HEADER, run.worker)]
    if stream:
        return StreamingResponse(200, renderer.stream(run.frames()), headers=worker)
    async with contextlib.aclosing(run.frames()) as frames:
        resp = await renderer.whole(frames)
    resp.headers = [*(resp.headers or []), *worker]
    return resp


async def openai_sse(frames: AsyncIterator[Frame], chunk: Callable[[Frame], tuple[bytes, bool]],
                     usage_event: Callable[[Usage], bytes] | None) -> AsyncIterator[bytes]:
    """OpenAI's SSE framing of a step stream (chat and completions): `chunk` renders a frame and says whether it
    finished its choice; that last chunk is held so the end (the usage event when asked, then [DONE]) goes out in
    the same write; an ErrorStep ends the stream with its error event. The frames are closed however it ends."""
    try:
        held = b""
        async for frame in frames:
            first = frame[0]
            if isinstance(first, ErrorStep):
                yield held + sse_error_step(first)
                return
            if isinstance(first, UsageStep) and not first.running:
                if usage_event is not None:
                    held += usage_event(first.usage)
                continue
            out, finished = chunk(frame)
            out, held = held + out, b""
            if finished:
                held = out
            elif out:
                yield out
        yield held + SSE_DONE
    finally:
        await frames.aclose()  # type: ignore[attr-defined]  # the request ends with its stream


@dataclass
class Call:
    id: str = ""
    name: str = ""
    arguments: str = ""


@dataclass
class Message:
    """One choice's whole output, gathered from its steps (for APIs' non-streamed answers)."""

    text: str = ""
    reasoning: str = ""
    calls: dict[int, Call] = field(default_factory=dict)

    def add(self, step: object) -> None:
        if isinstance(step, TextStep):
            self.text += step.text
        elif isinstance(step, ReasoningStep):
            self.reasoning += step.text
        elif isinstance(step, ToolCallStep):
            call = self.calls.setdefault(step.index, Call())
            call.id = step.id or call.id
            call.name = step.name or call.name
            call.arguments += step.arguments_fragment
