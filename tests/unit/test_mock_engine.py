"""The mock engine: timing from its cost model, real blocks, deterministic tokens."""

from __future__ import annotations

import asyncio
import contextlib

import msgspec
import pytest

from protocol.kv_events import BlockStored
from protocol.messages import EngineRequest, StopConditions
from shared.engine.base import EngineError
from shared.engine.mock import MockConfig, MockEngine, _Seq


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


# ---- the timing model: costs read from the engine's own step clock, no wall-clock ------------------
COSTS = MockConfig(num_blocks=256, page_size=16, prefill_base_ms=1.0, prefill_ms_per_token=0.5, decode_base_ms=5.0,
                   decode_ms_per_seq=0.25, decode_ms_per_ktoken=2.0)


def recording(cfg: MockConfig) -> tuple[MockEngine, list[float]]:
    """An engine whose steps take no time; each step's simulated cost (ms) is appended to the list."""
    eng, costs = MockEngine(cfg), []

    async def sleep(ms: float) -> None:
        costs.append(ms)
        await asyncio.sleep(0)

    eng._sleep = sleep  # type: ignore[method-assign]
    return eng, costs


async def test_prefill_costs_the_uncached_tokens_only():
    eng, costs = recording(COSTS)
    await eng.start()
    prompt = list(range(100, 164))  # 64 tokens: 4 blocks of 16
    cost = {}
    for rid, p in (("cold", prompt), ("warm", prompt), ("other", list(range(300, 364)))):
        costs.clear()
        _, usage = await run(eng, req(rid, p, n=1))  # one token: the prefill step alone
        cost[rid] = (costs[0], usage.cached_tokens)
    await eng.stop()
    c = COSTS
    assert cost["cold"] == (pytest.approx(c.prefill_base_ms + c.prefill_ms_per_token * 64), 0)
    assert cost["warm"][1] == 48  # the last block is recomputed (the first output needs its logits)
    assert cost["warm"][0] == pytest.approx(c.prefill_base_ms + c.prefill_ms_per_token * (64 - 48))
    assert cost["other"] == cost["cold"]  # same length, nothing cached: same cost


def test_decode_step_grows_with_batch_size_and_context():
    eng = MockEngine(COSTS)

    def step(*contexts: int) -> float:
        seqs = [_Seq(request=req(f"r{i}", [1]), tokens=[1] * n) for i, n in enumerate(contexts)]
        return eng._step_ms([], 0, seqs)

    c = COSTS
    assert step(200) == pytest.approx(c.decode_base_ms + c.decode_ms_per_seq + c.decode_ms_per_ktoken * 0.2)
    assert step(100, 100) - step(200) == pytest.approx(c.decode_ms_per_seq)  # same context, one more sequence
    assert step(*[25] * 8) - step(200) == pytest.approx(7 * c.decode_ms_per_seq)
    assert step(2200) - step(200) == pytest.approx(c.decode_ms_per_ktoken * 2)  # 2000 more tokens of context
    assert MockEngine(msgspec.structs.replace(COSTS, speedup=4.0))._step_ms([], 0, [
        _Seq(request=req("r", [1]), tokens=[1] * 200)]) == pytest.approx(step(200) / 4)
