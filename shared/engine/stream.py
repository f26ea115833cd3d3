"""Per-request output buffer between an engine's step loop and its consumer.

The engine pushes tokens as steps complete; the consumer takes everything
pushed since its last read as one chunk. A slow consumer therefore gets
fewer, larger chunks instead of a backlog. Call from the event loop's thread
only (engines running steps in a thread hop over with call_soon_threadsafe).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

from protocol.messages import OutputChunk, TopLogprob, Usage
from shared.engine.base import EngineError
from shared.telemetry.metrics import histogram

QUEUE_WAIT = histogram("shoal_worker_queue_wait_seconds", "From a request reaching the engine to its first "
                       "scheduling (mock and reference engines)", [],
                       buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))


class RequestStream:
    __slots__ = ("_arrived", "_error", "_event", "_finish", "_logprobs", "_prompt", "_stop_reason", "_tokens",
                 "_top", "_usage")

    def __init__(self) -> None:
        self._tokens: list[int] = []
        self._logprobs: list[float] | None = None
        self._top: list[list[TopLogprob]] | None = None
        self._finish: str | None = None
        self._stop_reason: int | str | None = None
        self._usage: Usage | None = None
        self._error: EngineError | None = None
        self._event = asyncio.Event()
        self._arrived: float | None = time.monotonic()
        self._prompt: tuple[list[float | None], list[list[TopLogprob]] | None] | None = None

    def prompt(self, logprobs: list[float | None], top: list[list[TopLogprob]] | None) -> None:
        """The prompt's logprobs (asked with OutputOptions.prompt_logprobs): sent on the next chunk."""
        self._prompt = (logprobs, top)
        self._event.set()

    def scheduled(self) -> None:
        """The engine took the request off its queue: record the wait (the first time only)."""
        if self._arrived is not None:
            QUEUE_WAIT.observe(time.monotonic() - self._arrived)
            self._arrived = None

    @property
    def done(self) -> bool:
        return self._finish is not None or self._error is not None

    def push(self, token: int, logprob: float | None = None, top: list[TopLogprob] | None = None) -> None:
        self._tokens.append(token)
        if logprob is not None:
            if self._logprobs is None:
                self._logprobs = []
            self._logprobs.append(logprob)
        if top is not None:
            if self._top is None:
                self._top = []
            self._top.append(top)
        self._event.set()

    def finish(self, reason: str, usage: Usage, stop_reason: int | str | None = None) -> None:
        self._finish = reason
        self._usage = usage
        self._stop_reason = stop_reason
        self._event.set()

    def fail(self, error: EngineError) -> None:
        self._error = error
        self._event.set()

    def _take(self) -> OutputChunk:
        chunk = OutputChunk(
            token_ids=self._tokens,
            logprobs=self._logprobs,
            top_logprobs=self._top,
            finish_reason=self._finish,
            stop_reason=self._stop_reason,
            usage=self._usage,
            prompt_logprobs=self._prompt[0] if self._prompt else None,
            prompt_top_logprobs=self._prompt[1] if self._prompt else None,
        )
        self._tokens, self._logprobs, self._top, self._prompt = [], None, None, None
        self._event.clear()
        return chunk

    async def chunks(self) -> AsyncIterator[OutputChunk]:
        while True:
            await self._event.wait()
            if self._error is not None:
                raise self._error
            chunk = self._take()
            yield chunk
            if chunk.finish_reason is not None:
                return
