"""The mock engine: timing from its cost model, real blocks, deterministic tokens."""

from __future__ import annotations

import asyncio
import contextlib

from protocol.kv_events import BlockStored
from protocol.messages import EngineRequest, StopConditions
from shared.engine.base import EngineError
from shared.engine.mock import MockConfig, MockEngine


def req(rid: str, prompt: list[int], n: int = 8) -> EngineRequest:
    return EngineRequest(request_id=rid, token_ids=prompt, stop=StopConditions(max_tokens=n))


async def run(engine: MockEngine, r: EngineRequest) -> tuple[list[int], object]:
    out: list[int] = []
    usage = None
    async for chunk in engine.generate(r):
        out.extend(chunk.token_ids)
        usage = chunk.usage or usage
    return out, usage


async def test_generates_and_reports_cached_prefix():
    events: list = []
    eng = MockEngine(MockConfig(num_blocks=64, page_size=4, speedup=1000))
    eng.set_kv_event_sink(events.extend)
    await eng.start()
    prompt = list(range(20))
    out1, u1 = await run(eng, req("a", prompt))
    out2, u2 = await run(eng, req("b", prompt))
    assert len(out1) == 8 and out1 == out2
    assert u1.cached_tokens == 0 and u2.cached_tokens == 16 and u2.prompt_tokens == 20
    assert any(isinstance(e, BlockStored) for e in events)
    await eng.stop()


async def test_continuation_matches_uninterrupted_run():
    eng = MockEngine(MockConfig(speedup=1000))
    await eng.start()
    whole, _ = await run(eng, req("a", [5, 6, 7], 10))
    part, _ = await run(eng, req("b", [5, 6, 7, *whole[:4]], 6))
    assert whole[4:] == part
    await eng.stop()


async def test_abort_frees_blocks():
    eng = MockEngine(MockConfig(num_blocks=64, page_size=4, speedup=0.5))
    await eng.start()
    gen = eng.generate(req("a", list(range(30)), 1000))
    async with contextlib.aclosing(gen):
        await anext(gen)
        assert eng.load().running == 1
    await asyncio.sleep(0)
    ld = eng.load()
    assert ld.running == 0
    assert all(eng.pool.ref_count(b) == 0 for b in range(64))
    await eng.stop()


async def test_too_long_is_refused():
    eng = MockEngine(MockConfig(context_length=32))
    await eng.start()
    try:
        await run(eng, req("a", list(range(30)), 8))
        raise AssertionError("expected an error")
    except EngineError as e:
        assert e.code == "context_length_exceeded"
    await eng.stop()
