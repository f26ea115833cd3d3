"""Tiers in the KV index and the router: per-worker per-block residency, weighted scores, flag parsing."""

from __future__ import annotations

import random

import msgspec
import pytest

from protocol.kv_events import BlockRemoved, BlockStored, KvEventBatch
from shared.kv.hashing import block_hashes
from shared.kv.radix import KvIndex
from shared.routing.kv_router import KvRouter
from shared.routing.options import ROUTER_FLAGS, RouterOptions
from shared.routing.tiers import DEFAULT_TIER_WEIGHTS, GPU_ONLY, cached_score, parse_tier_weights

PS = 4
PROMPT = list(range(100, 132))  # 8 blocks
HASHES = block_hashes(PROMPT, PS)
W1, W2 = ("a", 0), ("b", 0)
A, B = "a" * 16, "b" * 16


def stored(hashes: list[int], medium: str = "gpu") -> BlockStored:
    return BlockStored(block_hashes=hashes, token_ids=[], block_size=PS, medium=medium)


def test_old_events_read_as_gpu_and_gpu_events_encode_as_before():
    old = b'{"worker_id":"w","seq":1,"events":[{"type":"stored","block_hashes":[1],"token_ids":[]},' \
          b'{"type":"removed","block_hashes":[1]}]}'
    batch = msgspec.json.decode(old, type=KvEventBatch)
    assert [e.medium for e in batch.events] == ["gpu", "gpu"]
    assert b"medium" not in msgspec.json.encode(BlockRemoved(block_hashes=[1]))
    assert b'"medium":"host"' in msgspec.json.encode(BlockRemoved(block_hashes=[1], medium="host"))


def test_evicted_to_host_is_a_host_hit_not_a_miss():
    idx = KvIndex(PS)
    idx.apply(W1, stored(HASHES))
    assert not idx.tiered and idx.tier_depths(HASHES) == {W1: (8, 8, 8)}
    # the tail leaves GPU for host (stored host first, then removed gpu, as the engines send it)
    idx.apply(W1, stored(HASHES[5:], "host"))
    idx.apply(W1, BlockRemoved(block_hashes=HASHES[5:]))
    assert idx.tiered and idx.overlaps(HASHES) == {W1: 5}
    assert idx.tier_depths(HASHES) == {W1: (5, 8, 8)}
    idx.apply(W1, stored(HASHES[7:], "storage"))
    idx.apply(W1, BlockRemoved(block_hashes=HASHES[7:], medium="host"))
    assert idx.tier_depths(HASHES) == {W1: (5, 7, 8)}
    assert (idx.blocks_of(W1), idx.blocks_of(W1, "host"), idx.blocks_of(W1, "storage")) == (5, 2, 1)
    # a block held on GPU and host counts at GPU; dropping the host copy keeps the GPU one
    idx.apply(W1, stored(HASHES[5:6]))
    assert idx.tier_depths(HASHES) == {W1: (6, 7, 8)}
    idx.apply(W1, BlockRemoved(block_hashes=HASHES[5:6], medium="host"))
    assert idx.tier_depths(HASHES) == {W1: (6, 7, 8)}
    idx.remove_worker(W1)
    assert not idx.tiered and idx.tier_depths(HASHES) == {} and idx.workers() == []


def test_unknown_medium_is_counted_and_ignored():
    idx = KvIndex(PS)
    idx.apply(W1, stored(HASHES, "tape"))
    assert idx.unknown_media == 1 and idx.tier_depths(HASHES) == {}


def _naive(held: dict, hashes: list[int]) -> dict:
    """Per worker: (leading run on gpu, on gpu or host, in any tier), from per-block tier sets."""
    out = {}
    for w, tiers in held.items():
        depth = []
        for allowed in ({"gpu"}, {"gpu", "host"}, {"gpu", "host", "storage"}):
            n = 0
            while n < len(hashes) and tiers.get(hashes[n], set()) & allowed:
                n += 1
            depth.append(n)
        if depth[2]:
            out[w] = tuple(depth)
    return out


def _per_worker(idx: KvIndex, groups: list[tuple[int, int, float]]) -> tuple[dict, dict]:
    """`match`'s groups spread over their workers: (blocks matched, worth) per worker."""
    overlap, score = {}, {}
    for mask, depth, worth in groups:
        for slot, key in enumerate(idx.slot_keys):
            if mask >> slot & 1:
                overlap[key], score[key] = depth, worth
    return overlap, score


def test_tier_depths_match_a_naive_model():
    rng = random.Random(7)
    for _ in range(300):
        idx, held = KvIndex(PS), {}
        for _ in range(rng.randint(1, 12)):
            w = rng.choice([W1, W2, ("c", 1)])
            tier = rng.choice(["gpu", "host", "storage"])
            lo = rng.randint(0, 7)
            hs = HASHES[lo : rng.randint(lo + 1, 8)]
            if rng.random() < 0.7:
                idx.apply(w, stored(hs, tier))
                for h in hs:
                    held.setdefault(w, {}).setdefault(h, set()).add(tier)
            else:
                idx.apply(w, BlockRemoved(block_hashes=hs, medium=tier))
                for h in hs:
                    held.get(w, {}).get(h, set()).discard(tier)
        naive = _naive(held, HASHES)
        assert idx.tier_depths(HASHES) == naive
        assert idx.overlaps(HASHES) == {w: d[0] for w, d in naive.items() if d[0]}
        for weights in ((1.0, 0.6, 0.3), (1.0, 0.5, 0.0), (0.9, 0.9, 0.9)):
            overlap, score = _per_worker(idx, idx.match(HASHES, weights))
            top = 2 if weights[2] and idx.blocks_of(W1, "storage") + idx.blocks_of(W2, "storage") \
                + idx.blocks_of(("c", 1), "storage") else 1
            assert overlap == {w: d[top] for w, d in naive.items() if d[top]}
            assert {w: round(v, 9) for w, v in score.items() if w in overlap} == \
                {w: round(cached_score(d, weights), 9) for w, d in naive.items() if d[top]}


def test_weights_parse_and_score():
    assert parse_tier_weights(DEFAULT_TIER_WEIGHTS) == (1.0, 0.95, 0.3)
    assert parse_tier_weights("gpu=1,host=0.6,storage=0.3") == (1.0, 0.6, 0.3)
    assert parse_tier_weights("gpu=1") == GPU_ONLY
    for bad in ("gpu", "disk=1", "host=x", "host=2"):
        with pytest.raises(ValueError):
            parse_tier_weights(bad)
    assert cached_score((5, 8, 10), (1.0, 0.5, 0.25)) == 5 + 1.5 + 0.5


def test_flag_in_the_router_group():
    import argparse

    p = argparse.ArgumentParser()
    ROUTER_FLAGS.add_to(p)
    opts = ROUTER_FLAGS.build(p.parse_args(["--kv-tier-weights", "gpu=1,host=0.5"]))
    assert opts.tier_weights == "gpu=1,host=0.5"
    assert ROUTER_FLAGS.build(p.parse_args([])).tier_weights == RouterOptions().tier_weights == DEFAULT_TIER_WEIGHTS
    with pytest.raises(SystemExit):
        p.parse_args(["--kv-tier-weights", "host=abc"])
    router = RouterOptions(mode="kv", tier_weights="gpu=1,host=0.25").make(page_size=PS)
    assert isinstance(router, KvRouter) and router.tier_weights == (1.0, 0.25, 0.0)


def _router(weights) -> KvRouter:
    r = KvRouter(page_size=PS, seed=0, tier_weights=weights)
    for iid in (A, B):
        r.add_instance(iid)
    # A: 3 blocks on GPU; B: 3 on GPU, the other 5 on host
    r.apply_batch(KvEventBatch(worker_id=A, seq=1, events=[stored(HASHES[:3])]))
    r.apply_batch(KvEventBatch(worker_id=B, seq=1, events=[stored(HASHES[:3]), stored(HASHES[3:], "host")]))
    return r


def test_router_counts_host_blocks_at_their_weight():
    r = _router((1.0, 0.6, 0.3))
    for i in range(20):
        d = r.choose(f"r{i}", PROMPT, [A, B])
        r.finished(f"r{i}")
        assert (d.instance_id, d.overlap_blocks) == (B, 8)  # the host blocks are a reload, not a miss


def test_gpu_only_scoring_ignores_host_blocks():
    r = _router(GPU_ONLY)
    picks = {r.choose(f"r{i}", PROMPT, [A, B]).instance_id for i in range(40)}
    for i in range(40):
        r.finished(f"r{i}")
    assert picks == {A, B}  # a tie at 3 GPU blocks each: host blocks do not count
