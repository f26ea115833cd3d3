"""Per-model windows of what the frontend sees (TTFT, ITL, token counts), published each second for the planner.

`request_metrics.Meter` feeds `WINDOW` as batches pass; `StatsPublisher` sends and resets it.
A window with no traffic is not sent: the planner reads silence as no load.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from dataclasses import dataclass, field

from protocol import codec, subjects
from protocol.stats import FrontendStats, ModelStats
from shared.runtime.runtime import Runtime
from shared.runtime.tasks import cancel_and_wait

SAMPLES = 512  # latency samples kept per model and window (uniformly, by reservoir)


@dataclass
class _Model:
    requests: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    finished: int = 0
    failed: int = 0
    ttft: list[float] = field(default_factory=list)
    itl: list[float] = field(default_factory=list)
    seen: list[int] = field(default_factory=lambda: [0, 0])  # samples offered to ttft, itl


class StatsWindow:
    def __init__(self, samples: int = SAMPLES) -> None:
        self.samples = samples
        self._models: dict[str, _Model] = {}
        self._rng = random.Random(0)

    def _m(self, model: str) -> _Model:
        m = self._models.get(model)
        if m is None:
            m = self._models[model] = _Model()
        return m

    def started(self, model: str, prompt_tokens: int) -> None:
        m = self._m(model)
        m.requests += 1
        m.input_tokens += prompt_tokens

    def tokens(self, model: str, n: int, first_after: float | None) -> None:
        """`n` tokens arrived; `first_after`: seconds from dispatch when they are the request's first."""
        m = self._m(model)
        m.output_tokens += n
        if first_after is not None:
            self._sample(m.ttft, 0, m, first_after)

    def ended(self, model: str, ok: bool, mean_itl: float | None) -> None:
        m = self._m(model)
        if ok:
            m.finished += 1
            if mean_itl is not None:
                self._sample(m.itl, 1, m, mean_itl)
        else:
            m.failed += 1

    def take(self) -> list[ModelStats]:
        models, self._models = self._models, {}
        return [ModelStats(name, m.requests, m.input_tokens, m.output_tokens, m.finished, m.failed, m.ttft, m.itl)
                for name, m in sorted(models.items())]

    def _sample(self, xs: list[float], which: int, m: _Model, x: float) -> None:
        m.seen[which] += 1
        if len(xs) < self.samples:
            xs.append(x)
        else:
            j = self._rng.randrange(m.seen[which])
            if j < self.samples:
                xs[j] = x


WINDOW = StatsWindow()


class StatsPublisher:
    def __init__(self, rt: Runtime, window: StatsWindow = WINDOW, interval: float = 1.0) -> None:
        self.rt = rt
        self.window = window
        self.interval = interval
        self.subject = subjects.frontend_stats_subject(rt.namespace, rt.instance_id)
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.window.take()  # what came before the first window is not in it
        self._task = asyncio.create_task(self._run(), name="frontend-stats")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)

    async def _run(self) -> None:
        last = time.monotonic()
        while True:
            await asyncio.sleep(self.interval)
            now = time.monotonic()
            models, elapsed, last = self.window.take(), now - last, now
            if models:
                msg = FrontendStats(self.rt.instance_id, elapsed, models, time.time())
                with contextlib.suppress(Exception):  # NATS down: this window is lost, the next one goes
                    await self.rt.nc.publish(self.subject, codec.encode(msg))
