"""The block pool: allocation, prefix sharing, eviction, reference counts, events."""

from __future__ import annotations

import random

import pytest

from protocol.kv_events import AllBlocksCleared, BlockRemoved, BlockStored
from shared.kv import block_hashes
from shared.kv.block_pool import BlockPool


def events_sink():
    got: list = []
    return got, got.extend


def test_prefix_is_reused_and_reported_once():
    got, sink = events_sink()
    pool = BlockPool(8, 4, sink)
    prompt = list(range(10))  # 2 full blocks + 2 tokens
    a = pool.allocate(prompt)
    assert a is not None and a.num_cached_tokens == 0 and len(a.block_ids) == 3
    pool.commit(a, prompt)
    stored = [e for e in got if isinstance(e, BlockStored)]
    assert [h for e in stored for h in e.block_hashes] == block_hashes(prompt, 4)
    b = pool.allocate(prompt)
    assert b is not None and b.num_cached_tokens == 8 and b.block_ids[:2] == a.block_ids[:2]
    assert pool.ref_count(a.block_ids[0]) == 2


def test_whole_prompt_cached_still_recomputes_last_token():
    pool = BlockPool(8, 4)
    prompt = list(range(8))
    a = pool.allocate(prompt)
    pool.commit(a, prompt)
    pool.free(a)
    b = pool.allocate(prompt)
    assert b.num_cached_tokens == 4  # the last block holds the token whose logits we need


def test_eviction_is_lru_and_reported():
    got, sink = events_sink()
    pool = BlockPool(4, 2, sink)
    first = pool.allocate([1, 2, 3])
    pool.commit(first, [1, 2, 3])
    pool.free(first)
    second = pool.allocate([7, 8, 9, 10, 11, 12, 13])  # needs all 4 blocks: evicts the cached one
    assert second is not None
    removed = [e for e in got if isinstance(e, BlockRemoved)]
    assert removed and removed[0].block_hashes == block_hashes([1, 2], 2)
    assert pool.allocate([1, 2, 3]) is None  # full: waits, does not fail


def test_clear_reports_and_keeps_held_blocks():
    got, sink = events_sink()
    pool = BlockPool(4, 2, sink)
    held = pool.allocate([1, 2, 3])
    pool.commit(held, [1, 2, 3])
    pool.clear()
    assert isinstance(got[-1], AllBlocksCleared)
    assert pool.num_used == 2


def test_double_free_is_caught():
    pool = BlockPool(4, 2)
    t = pool.allocate([1, 2, 3])
    ids = list(t.block_ids)
    pool.free(t)
    t.block_ids = ids
    with pytest.raises(AssertionError):
        pool.free(t)


def test_randomized_no_leak_no_negative_refs():
    rng = random.Random(0)
    pool = BlockPool(64, 4)
    prefixes = [[rng.randrange(50) for _ in range(rng.randrange(4, 40))] for _ in range(6)]
    live = []
    for _ in range(3000):
        op = rng.random()
        if op < 0.5:
            prompt = rng.choice(prefixes) + [rng.randrange(50) for _ in range(rng.randrange(1, 12))]
            t = pool.allocate(prompt)
            if t is not None:
                tokens = list(prompt)
                pool.commit(t, tokens)
                live.append((t, tokens))
        elif op < 0.8 and live:
            t, tokens = live[rng.randrange(len(live))]
            tokens.append(rng.randrange(50))
            if pool.grow(t, len(tokens)):
                pool.commit(t, tokens)
            else:
                tokens.pop()
        elif live:
            t, _ = live.pop(rng.randrange(len(live)))
            pool.free(t)
        assert all(pool.ref_count(b) >= 0 for b in range(64))
        held = {b for t, _ in live for b in t.block_ids}
        assert pool.num_used == len(held)
    for t, _ in live:
        pool.free(t)
    assert pool.num_used == 0
