"""Conditional disaggregation's choice: local under --disagg-local-prefill-tokens uncached tokens (this decode
worker's prefix cache counts), local when every prefill worker is busy, remote otherwise."""

from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace

import pytest

from protocol.kv_events import WorkerLoad
from services.worker.roles.prefill_path import LOCAL, REMOTE, PrefillPath, cached_tokens
from shared.kv.block_pool import BlockPool
from shared.kv.hashing import lora_root
from shared.routing.busy import BusyFilter


@dataclass
class CachingEngine:
    pool: BlockPool

    def cached_prompt_tokens(self, token_ids: list[int], lora: str = "") -> int:
        return self.pool.cached_tokens(token_ids, lora_root(lora))


def engine_with(prompt: list[int]) -> CachingEngine:
    """An engine whose pool has `prompt`'s full blocks cached."""
    pool = BlockPool(64, 16)
    table = pool.allocate(prompt)
    pool.commit(table, prompt)
    pool.free(table)
    return CachingEngine(pool)


def test_short_or_cached_prompts_go_local_long_ones_remote():
    cached = list(range(100, 300))  # 200 tokens: 12 full blocks cached
    eng = engine_with(cached)
    assert cached_tokens(eng, cached) == 192 and cached_tokens(eng, cached[:17]) == 16
    assert cached_tokens(eng, cached, lora="adapter") == 0  # an adapter's own hash chain
    path = PrefillPath(local_prefill_tokens=64)
    assert path.choose(eng, list(range(500, 540))).path == LOCAL  # 40 tokens
    c = path.choose(eng, list(range(500, 600)))  # 100 uncached
    assert (c.path, c.reason, c.uncached_tokens) == (REMOTE, "uncached", 100)
    c = path.choose(eng, cached + list(range(900, 920)))  # 220 tokens, 192 cached here: 28 to compute
    assert (c.path, c.reason, c.uncached_tokens) == (LOCAL, "short", 28)
    assert PrefillPath().choose(eng, [1, 2, 3]).path == REMOTE  # 0: off
    assert PrefillPath(0).enabled is False and PrefillPath(1).enabled
    with pytest.raises(ValueError):
        PrefillPath(-1)


def test_every_prefill_worker_busy_goes_local():
    busy = BusyFilter(16, prefill_tokens=1000)
    path = PrefillPath(0, busy, live=lambda: ["p1", "p2"])
    eng = SimpleNamespace()  # no prefix cache to ask: nothing counts as cached
    prompt = list(range(3, 403))
    assert path.choose(eng, prompt).path == REMOTE and path.enabled
    busy.apply_load(WorkerLoad("p1", prefill_tokens=5000))
    assert path.choose(eng, prompt).path == REMOTE  # p2 is free
    path.sent("r1", "p2", 1200)  # what this decode worker sent counts before the next report
    c = path.choose(eng, prompt)
    assert (c.path, c.reason) == (LOCAL, "busy")
    path.finished("r1")
    assert path.choose(eng, prompt).path == REMOTE
