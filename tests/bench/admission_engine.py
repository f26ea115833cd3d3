"""bench_admission's control: one mock engine in-process (no frontend, no NATS, no HTTP) under the same
per-worker arrivals, so the engine's own scheduling is measured apart from the host's CPU contention.

TTFT here is from `generate()` to the first token. The frontend's admission (busy threshold 0.5 of 512
blocks, 0.4 of it reserved for priority > 0) is stood in for by `low_slots`: at most that many priority-0
requests in the engine at once (the rest wait their turn), the high ones unbounded, as the frontend lets
them through; without it the engine's KV fills with low requests and a high one waits for one to finish
(the mock, like SGLang by default, does not preempt a running request for a higher priority).
The high class must stay near its unloaded value when
the engine runs prefill in chunks (a priority-10 arrival waits for one chunk or one decode step); without
chunks it waits for a whole prompt's prefill.
"""

from __future__ import annotations

import asyncio
import random
import time

from protocol.messages import EngineRequest, StopConditions
from shared.engine.mock import MockConfig, MockEngine
from tests.bench.loadgen import percentile


def config(chunk: int) -> MockConfig:
    return MockConfig(num_blocks=512, page_size=16, speedup=0.25, max_batched_tokens=640, max_running=64,
                      chunked_prefill_size=chunk)


async def _one(eng: MockEngine, rng: random.Random, priority: int, prompt_tokens: int, max_tokens: int,
               out: dict[str, list[float]], i: int, slots: asyncio.Semaphore | None = None) -> None:
    if slots is not None and not priority:
        async with slots:
            await _one(eng, rng, priority, prompt_tokens, max_tokens, out, i)
        return
    req = EngineRequest(request_id=f"r{i}", token_ids=[rng.randrange(3, 250) for _ in range(prompt_tokens)],
                        stop=StopConditions(max_tokens=max_tokens), priority=priority)
    t0 = time.perf_counter()
    first = None
    async for chunk in eng.generate(req):
        if first is None and chunk.token_ids:
            first = (time.perf_counter() - t0) * 1000
    out.setdefault("high" if priority else "low", []).append(first or 0.0)


async def engine_alone(chunk: int, rate: float, seconds: float, high_share: float, prompt_tokens: int,
                       max_tokens: int, low_slots: int = 3) -> dict[str, object]:
    """Unloaded high TTFT, then open-loop arrivals at `rate` a second with `high_share` of priority 10."""
    eng = MockEngine(config(chunk))
    await eng.start()
    rng = random.Random(5)
    solo: dict[str, list[float]] = {}
    for i in range(30):
        await _one(eng, rng, 10, prompt_tokens, max_tokens, solo, i)
    loaded: dict[str, list[float]] = {}
    slots = asyncio.Semaphore(low_slots)
    tasks = []
    start = time.monotonic()
    for i in range(int(rate * seconds)):
        await asyncio.sleep(max(0.0, start + i / rate - time.monotonic()))
        prio = 10 if rng.random() < high_share else 0
        tasks.append(asyncio.create_task(_one(eng, rng, prio, prompt_tokens, max_tokens, loaded, 1000 + i, slots)))
    await asyncio.sleep(2.0)  # the high ones are done long before the low backlog
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await eng.stop()
    base = percentile(solo["high"], 99) or 0.0
    high = loaded.get("high", [])
    p99 = percentile(high, 99)
    return {"run": f"engine alone, chunked prefill {chunk or 'off'}", "rate_per_s": round(rate, 1),
            "requests": len(high), "unloaded_p99_ms": round(base, 1),
            "ttft_p50_ms": round(percentile(high, 50) or 0.0, 1), "ttft_p99_ms": round(p99 or 0.0, 1),
            "p99_over_unloaded": round((p99 or 0.0) / base, 2) if base else None}
