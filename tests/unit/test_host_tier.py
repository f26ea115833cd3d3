"""The host KV tier: evicted GPU blocks copied to host memory (LRU), reloaded on a prefix hit with events;
on the reference engine's real math, token ids equal to the run without the tier."""

from __future__ import annotations

from pathlib import Path

import pytest

from protocol.kv_events import BlockRemoved, BlockStored
from protocol.messages import EngineRequest, SamplingOptions, StopConditions
from shared.engine.reference import ReferenceConfig, ReferenceEngine
from shared.kv.block_pool import BlockPool
from shared.kv.hashing import block_hashes
from shared.kv.host_tier import HostTier
from tests.llama import make_llama

PS = 4


class Mover:
    def __init__(self) -> None:
        self.gpu: dict[int, object] = {}
        self.host: dict[int, object] = {}

    def save(self, block_id: int, slot: int) -> None:
        self.host[slot] = self.gpu.get(block_id)

    def load(self, slot: int, block_id: int) -> None:
        self.gpu[block_id] = self.host[slot]


def _events(evs: list) -> list[tuple[str, str, list[int]]]:
    return [("stored" if isinstance(e, BlockStored) else "removed", e.medium, e.block_hashes) for e in evs]


def test_pool_evicts_to_host_lru_and_reloads_what_is_left() -> None:
    events: list = []
    mover = Mover()
    pool = BlockPool(4, PS, events.extend, HostTier(2, mover, PS))
    a, b = list(range(100, 113)), list(range(200, 213))  # 3 full blocks + 1 token each
    ha = block_hashes(a, PS)
    t = pool.allocate(a)
    pool.commit(t, a)
    for i, bid in enumerate(t.block_ids[:3]):
        mover.gpu[bid] = f"kv-a{i}"
    pool.free(t)
    events.clear()
    t = pool.allocate(b)  # all 4 GPU blocks: a's 3 cached blocks leave, tail first, for a host of 2
    assert _events(events) == [
        ("stored", "host", [ha[2]]), ("removed", "gpu", [ha[2]]),
        ("stored", "host", [ha[1]]), ("removed", "gpu", [ha[1]]),
        ("removed", "host", [ha[2]]), ("stored", "host", [ha[0]]), ("removed", "gpu", [ha[0]]),
    ]
    pool.commit(t, b)
    pool.free(t)
    events.clear()
    t = pool.allocate(a)  # blocks 0 and 1 come back from host, block 2 is recomputed
    assert t.num_cached_tokens == 8 and pool.host.loaded == 2
    assert [mover.gpu[bid] for bid in t.block_ids[:2]] == ["kv-a0", "kv-a1"]
    assert ("stored", "gpu", ha[:2]) in _events(events) and len(t.block_ids) == 4
    pool.commit(t, a)
    assert ("stored", "gpu", [ha[2]]) in _events(events)


def test_pool_reload_counts_as_cached_with_gpu_event() -> None:
    events: list = []
    mover = Mover()
    pool = BlockPool(5, PS, events.extend, HostTier(8, mover, PS))
    a, b = list(range(100, 117)), list(range(200, 217))
    ha = block_hashes(a, PS)
    t = pool.allocate(a)
    pool.commit(t, a)
    for i, bid in enumerate(t.block_ids):
        mover.gpu[bid] = f"kv-a{i}"
    pool.free(t)
    t = pool.allocate(b)
    pool.commit(t, b)
    pool.free(t)
    events.clear()
    t = pool.allocate(a)
    assert t.num_cached_tokens == 16 and pool.host.loaded == 4
    assert [mover.gpu[bid] for bid in t.block_ids[:4]] == ["kv-a0", "kv-a1", "kv-a2", "kv-a3"]
    assert ("stored", "gpu", ha[:4]) in _events(events)
    pool.free(t)


# ---- the reference engine, real math -------------------------------------------------------------------
@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_llama(tmp_path_factory.mktemp("tiny-llama-host"))


async def _run(model_dir: Path, host_blocks: int) -> tuple[list[list[int]], list[int], list]:
    events: list = []
    eng = ReferenceEngine(ReferenceConfig(model_path=str(model_dir), page_size=PS, num_blocks=16,
                                          host_kv_blocks=host_blocks))
    await eng.start()
    eng.set_kv_event_sink(events.extend)
    a = [(i * 37) % 290 + 3 for i in range(41)]  # 10 full blocks
    b = [(i * 53) % 290 + 5 for i in range(52)]  # 52 + 12 tokens: all 16 GPU blocks
    outs, cached = [], []
    try:
        for rid, prompt in (("a1", a), ("b", b), ("a2", a)):  # b evicts a's blocks from the 16 GPU blocks
            req = EngineRequest(request_id=rid, token_ids=prompt, sampling=SamplingOptions(temperature=0.0),
                                stop=StopConditions(max_tokens=12))
            chunks = [c async for c in eng.generate(req)]
            outs.append([t for c in chunks for t in c.token_ids])
            cached.append(chunks[-1].usage.cached_tokens)
    finally:
        await eng.stop()
    return outs, cached, events


async def test_reference_engine_host_tier_reloads_with_equal_ids(model_dir: Path) -> None:
    plain, plain_cached, _ = await _run(model_dir, 0)
    tiered, tiered_cached, events = await _run(model_dir, 32)
    assert plain_cached[2] == 0  # without the tier, a's blocks were evicted and recomputed
    assert tiered_cached[2] == 40  # with it, reloaded from host (all 10 full blocks)
    assert tiered == plain
    media = {(type(e).__name__, e.medium) for e in events if isinstance(e, BlockStored | BlockRemoved)}
    assert {("BlockStored", "host"), ("BlockRemoved", "gpu"), ("BlockStored", "gpu")} <= media
