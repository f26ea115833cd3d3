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
    """The answer; a renderer's stream closes its frames (the request counted out, its engine requests
    cancelled) however the client's stream ends."""
    worker = [(WORKER_HEADER, run.worker)]
    if stream:
        return StreamingResponse(200, renderer.stream(run.frames()), headers=worker)
    async with contextlib.aclosing(run.frames()) as frames:
        resp = await renderer.whole(frames)
    resp.headers = [*(resp.headers or []), *worker]
    return resp


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
