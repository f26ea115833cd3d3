"""The mock engine's chunked prefill (SGLang's --chunked-prefill-size): a long prompt is prefilled over steps,
its blocks enter the cache chunk by chunk, and a request of a larger priority goes between the chunks."""

from __future__ import annotations

import asyncio

import msgspec

from protocol.kv_events import BlockStored
from protocol.messages import EngineRequest, StopConditions
from shared.engine.mock import MockConfig, MockEngine

CFG = MockConfig(num_blocks=256, page_size=16, prefill_base_ms=1.0, prefill_ms_per_token=0.5, decode_base_ms=5.0,
                 chunked_prefill_size=64)


def req(rid: str, prompt: list[int], n: int, priority: int = 0) -> EngineRequest:
    return EngineRequest(request_id=rid, token_ids=prompt, stop=StopConditions(max_tokens=n), priority=priority)


async def scenario(cfg: MockConfig) -> tuple[list[str], list[float], list[int], MockEngine]:
    """A 512-token prompt at priority 0; after its first step a 32-token one at priority 10 arrives.
    Returns the order of first tokens, each step's cost, the stored blocks after each step, the engine."""
    eng = MockEngine(cfg)
    stored: list[int] = []
    eng.set_kv_event_sink(lambda evs: stored.extend(len(e.block_hashes) for e in evs if isinstance(e, BlockStored)))
    costs: list[float] = []
    after: list[int] = []
    firsts: list[str] = []
    tasks: list[asyncio.Task[None]] = []

    async def first_token(r: EngineRequest) -> None:
        async for chunk in eng.generate(r):
            if chunk.token_ids and r.request_id not in firsts:
                firsts.append(r.request_id)

    async def sleep(ms: float) -> None:
        after.append(sum(stored))
        costs.append(ms)
        if len(costs) == 1:
            tasks.append(asyncio.create_task(first_token(req("high", list(range(600, 632)), 1, priority=10))))
        for _ in range(3):
            await asyncio.sleep(0)

    eng._sleep = sleep  # type: ignore[method-assign]
    await eng.start()
    await first_token(req("long", list(range(1000, 1512)), 2))
    await asyncio.gather(*tasks)
    await eng.stop()
    return firsts, costs, after, eng


async def test_long_prompt_prefills_in_chunks_and_a_higher_priority_goes_between():
    firsts, costs, after, eng = await scenario(CFG)
    assert firsts == ["high", "long"]  # the short high one was not held behind 512 tokens of prefill
    chunk = CFG.prefill_base_ms + CFG.prefill_ms_per_token * 64
    assert costs[0] == chunk  # the step runs one chunk, not the whole prompt
    assert costs[1] == CFG.prefill_base_ms + CFG.prefill_ms_per_token * 64  # high's 32 + 32 of long's next chunk
    assert after[1] == 4 and after[2] == 4 + 2 + 2  # blocks enter the cache as their chunk is computed
    assert all(eng.pool.ref_count(b) == 0 for b in range(CFG.num_blocks))


async def test_without_chunking_the_long_prefill_runs_whole_first():
    firsts, costs, _, eng = await scenario(msgspec.structs.replace(CFG, chunked_prefill_size=0,
                                                                   max_batched_tokens=512))
    assert firsts == ["long", "high"]
    assert costs[0] == CFG.prefill_base_ms + CFG.prefill_ms_per_token * 512
    assert all(eng.pool.ref_count(b) == 0 for b in range(CFG.num_blocks))


async def test_cached_prefix_is_not_prefilled_again_in_chunks():
    eng = MockEngine(CFG)
    costs: list[float] = []

    async def sleep(ms: float) -> None:
        costs.append(ms)
        await asyncio.sleep(0)

    eng._sleep = sleep  # type: ignore[method-assign]
    await eng.start()
    prompt = list(range(2000, 2200))  # 200 tokens: 4 chunks cold
    outs = []
    for rid in ("cold", "warm"):
        costs.clear()
        toks = []
        async for c in eng.generate(req(rid, prompt, 3)):
            toks.extend(c.token_ids)
            usage = c.usage or None
        outs.append((toks, usage))
        if rid == "cold":
            cold_prefill_steps = len(costs) - 2  # two decode steps after the first token
    await eng.stop()
    assert cold_prefill_steps == 4
    decode = CFG.decode_base_ms + CFG.decode_ms_per_seq + CFG.decode_ms_per_ktoken * 202 / 1000
    assert costs[-1] == decode  # after the first token, decode steps (not one-token prefills)
    assert outs[0][0] == outs[1][0]  # same tokens, chunked or not
    assert outs[1][1].cached_tokens == 192 and len(costs) == 1 + 2  # the 8 uncached tokens: one step
