"""OpenAI `n` > 1: several sampled choices for one prompt.

Each choice is its own engine request (request id `{id}-{i}`, seed `seed + i` when a
seed is given), dispatched like any other, so each is routed, migrated and cancelled
on its own (they start together: a router balances them as concurrent requests). The
whole response lists the choices by index; a stream interleaves their chunks, each
tagged with its index, and ends when all have finished. Usage counts the prompt once
and every choice's tokens. The first failure ends the response (the others are
cancelled), as one failed choice would leave the answer incomplete.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import msgspec

from protocol.messages import EngineRequest
from services.frontend.dispatch import Dispatcher
from services.frontend.models import ModelEntry
from services.frontend.openai_types import (
    PromptTokensDetails,
    UsageInfo,
)
from services.frontend.postprocess import Step, merge_steps
from services.frontend.preprocess import Prepared
from services.frontend.responses import SSE_DONE, failure_response, sse_error
from services.frontend.shapes import ChoiceChunks, new_state, usage_event, whole_response
from shared.http import Response
from shared.runtime.errors import RuntimeFailure
from shared.runtime.tasks import cancel_and_wait
from shared.telemetry.tracing import inject_headers


def fan_out(request: EngineRequest, n: int) -> list[EngineRequest]:
    """One engine request per choice: its own id, and its own seed when the client gave one."""
    seed = request.sampling.seed
    return [msgspec.structs.replace(
        request, request_id=f"{request.request_id}-{i}",
        sampling=msgspec.structs.replace(request.sampling, seed=None if seed is None else seed + i))
        for i in range(n)]


class Choices:
    """The n choices of one request: their engine streams and output states."""

    def __init__(self, dispatcher: Dispatcher, model: ModelEntry, p: Prepared, instance: str | None, n: int) -> None:
        self.model, self.p = model, p
        self.states = [new_state(model, p) for _ in range(n)]
        self.streams = [dispatcher.stream(model, r, instance, inject_headers({}), {}) for r in fan_out(p.request, n)]

    def usage(self) -> UsageInfo:
        first = self.states[0]
        done = sum(s.completion_tokens for s in self.states)
        return UsageInfo(first.prompt_tokens, done, first.prompt_tokens + done,
                         PromptTokensDetails(cached_tokens=first.cached_tokens))

    async def close(self) -> None:
        for s in self.streams:
            with contextlib.suppress(Exception):
                await s.aclose()  # type: ignore[attr-defined]

    async def _steps(self, i: int) -> AsyncIterator[Step]:
        """Choice i's steps until it finishes (a stream that ends early just ends)."""
        state = self.states[i]
        async for items in self.streams[i]:
            step = state.feed(items)
            yield step
            if state.finish_reason is not None:
                return

    # ---- the whole response --------------------------------------------------------------
    async def whole(self, chat: bool) -> Response:
        async def collect(i: int) -> tuple[str, Step]:
            steps = [step async for step in self._steps(i)]
            return "".join(s.text for s in steps), merge_steps(steps)

        tasks = [asyncio.create_task(collect(i)) for i in range(len(self.states))]
        try:
            results = await asyncio.gather(*tasks)
        except RuntimeFailure as e:
            return failure_response(e)
        finally:
            await cancel_and_wait(*tasks)  # after a failure, the other choices stop too
            await self.close()
        body = whole_response(chat, self.p.request.request_id, int(time.time()), self.model.name,
                              [(text, merged, st) for (text, merged), st in zip(results, self.states, strict=True)],
                              self.usage())
        return Response(200, body)

    # ---- the stream --------------------------------------------------------------------------
    async def stream(self, chat: bool, release: Callable[[], None]) -> AsyncIterator[bytes]:
        rid, created, name = self.p.request.request_id, int(time.time()), self.model.name
        # bounded: a slow client holds the pumps back, and the workers merge tokens into fewer frames
        queue: asyncio.Queue[tuple[int, Any]] = asyncio.Queue(maxsize=2 * len(self.states))

        async def pump(i: int) -> None:
            chunks = ChoiceChunks(chat, rid, created, name, i, self.states[i])
            try:
                async for step in self._steps(i):
                    if event := chunks.event(step):
                        await queue.put((i, event))
                await queue.put((i, None))
            except RuntimeFailure as e:
                await queue.put((i, e))

        tasks = [asyncio.create_task(pump(i)) for i in range(len(self.states))]
        try:
            running = len(tasks)
            while running:
                _, item = await queue.get()
                if item is None:
                    running -= 1
                elif isinstance(item, RuntimeFailure):
                    yield sse_error(item)
                    return
                else:
                    yield item
            if self.p.include_usage:
                yield usage_event(chat, rid, created, name, self.usage())
            yield SSE_DONE
        finally:
            release()
            await cancel_and_wait(*tasks)
            await self.close()
