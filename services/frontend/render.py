"""What a front door is: a request shape in, a renderer of the one step stream out.

    class Renderer(Protocol):
        def error(self, step) -> Response                  # this API's error shape (before the first token)
        async def whole(self, frames) -> Response          # a non-streamed answer
        def stream(self, frames) -> AsyncIterator[bytes]   # this API's events

`respond` runs a started request through a renderer and puts the worker header on it.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Protocol

from services.frontend.http_errors import WORKER_HEADER
from services.frontend.pipeline import Run
from services.frontend.steps import ErrorStep, Frame, ReasoningStep, TextStep, ToolCallStep
from shared.http import Response, StreamingResponse


class Renderer(Protocol):
    def error(self, step: ErrorStep) -> Response: ...

    async def whole(self, frames: AsyncIterator[Frame]) -> Response: ...

    def stream(self, frames: AsyncIterator[Frame]) -> AsyncIterator[bytes]: ...


async def respond(renderer: Renderer, run: Run, stream: bool) -> Response | StreamingResponse:
    worker = [(WORKER_HEADER, run.worker)]
    if stream:
        frames = run.frames()
        return StreamingResponse(200, _closing(renderer.stream(frames), frames), headers=worker)
    async with contextlib.aclosing(run.frames()) as frames:
        resp = await renderer.whole(frames)
    resp.headers = [*(resp.headers or []), *worker]
    return resp


async def _closing(events: AsyncIterator[bytes], frames: AsyncIterator[Frame]) -> AsyncIterator[bytes]:
    """`events`, then `frames` closed (the request counted out, its engine requests cancelled) at once, however
    the client's stream ends (a generator does not close the one it reads from)."""
    try:
        async for out in events:
            yield out
    finally:
        await events.aclose()  # type: ignore[attr-defined]
        await frames.aclose()  # type: ignore[attr-defined]


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
