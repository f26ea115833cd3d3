"""The KV router's choice: cached prefix against load, request tracking, event order, approximate mode."""

from __future__ import annotations

import math
from collections import Counter

import pytest

from protocol.kv_events import AllBlocksCleared, BlockRemoved, BlockStored, KvEventBatch, WorkerLoad
from shared.kv.hashing import block_hashes
from shared.routing import RandomRouter, RoundRobinRouter, make_router
from shared.routing.kv_router import HIT_BLOCKS, KvRouter

PS = 4
PROMPT = list(range(100, 132))  # 8 blocks
A, B, C = "a" * 16, "b" * 16, "c" * 16


def stored(tokens: list[int]) -> BlockStored:
    return BlockStored(block_hashes=block_hashes(tokens, PS), token_ids=tokens, block_size=PS)


def batch(worker: str, seq: int, *events, dp_rank: int = 0) -> KvEventBatch:
    return KvEventBatch(worker_id=worker, seq=seq, events=list(events), dp_rank=dp_rank)


def router(**kw) -> KvRouter:
    r = KvRouter(page_size=PS, seed=0, **kw)
    for iid in (A, B, C):
        r.add_instance(iid)
    return r


def test_prefers_the_worker_holding_the_prefix():
    r = router()
    r.apply_batch(batch(B, 1, stored(PROMPT[:24])))
    d = r.choose("r1", PROMPT, [A, B, C])
    assert (d.instance_id, d.overlap_blocks) == (B, 6)


def test_only_candidates_are_chosen():
    r = router()
    r.apply_batch(batch(B, 1, stored(PROMPT)))
    assert r.choose("r1", PROMPT, [A, C]).instance_id in {A, C}


def test_ties_are_broken_at_random():
    r = router()
    picks = Counter()
    for i in range(300):
        picks[r.choose(f"r{i}", PROMPT, [A, B, C]).instance_id] += 1
        r.finished(f"r{i}")
    assert set(picks) == {A, B, C} and min(picks.values()) > 50


def test_routed_requests_count_as_load_until_finished():
    r = router()
    first = r.choose("r1", PROMPT, [A, B]).instance_id
    second = r.choose("r2", PROMPT, [A, B]).instance_id
    assert second != first  # the first request's 8 blocks now weigh on its worker
    assert r._load(first) == 8 and r._load(second) == 8
    r.finished("r1")
    r.finished("r1")  # twice is harmless
    assert r._load(first) == 0
    assert r.choose("r3", PROMPT, [A, B]).instance_id == first
    r.finished("r2")
    r.finished("r3")
    assert r._active == {} and r._routed == {}


def test_overlap_weight_trades_cache_against_load():
    for weight, want in ((4.0, B), (0.1, A)):
        r = router(overlap_weight=weight)
        r.apply_batch(batch(B, 1, stored(PROMPT)))
        r.apply_load(WorkerLoad(worker_id=B, running=3, kv_used_blocks=12))
        assert r.choose("r", PROMPT, [A, B]).instance_id == want, weight


def test_reported_load_counts_waiting_requests():
    r = router()
    r.apply_load(WorkerLoad(worker_id=A, waiting=2))
    assert r._load(A) == 2 * PS
    assert r.choose("r1", PROMPT[:8], [A, B]).instance_id == B  # 2 blocks on B beat 2 waiting on A
    assert r.choose("r2", PROMPT[:8], [A, B]).instance_id == B  # B's 4 still beat A's 8


def test_reported_and_tracked_load_do_not_double_count():
    r = router()
    r.choose("r1", PROMPT, [A])  # 8 blocks tracked on A
    r.apply_load(WorkerLoad(worker_id=A, running=1, kv_used_blocks=8))  # the same request, now reported
    assert r._load(A) == 8


def test_temperature_makes_a_soft_choice():
    r = router(temperature=2.0, overlap_weight=1.0)
    r.apply_batch(batch(B, 1, stored(PROMPT[:8])))  # B: cost 6, A and C: cost 8
    picks = Counter()
    n = 3000
    for i in range(n):
        picks[r.choose(f"r{i}", PROMPT, [A, B, C]).instance_id] += 1
        r.finished(f"r{i}")
    wb, wa = 1.0, math.exp(-2 / 2.0)
    assert picks[B] / n == pytest.approx(wb / (wb + 2 * wa), abs=0.04)
    assert picks[A] > 0 and picks[C] > 0


def test_duplicates_are_skipped_and_a_gap_clears_the_worker():
    r = router()
    h = block_hashes(PROMPT, PS)
    assert r.apply_batch(batch(A, 1, stored(PROMPT[:8])))
    assert r.apply_batch(batch(A, 2, stored(PROMPT)))
    assert not r.apply_batch(batch(A, 2, BlockRemoved(block_hashes=h)))  # replayed: ignored
    assert not r.apply_batch(batch(A, 1, AllBlocksCleared()))
    assert r.index.overlaps(h) == {(A, 0): 8}
    assert r.apply_batch(batch(A, 5, stored(PROMPT[:4])))  # 3 and 4 were lost: what we knew is stale
    assert r.index.overlaps(h) == {(A, 0): 1}
    assert not r.apply_batch(batch(A, 4, stored(PROMPT)))


def test_sequences_are_per_worker_and_rank():
    r = router()
    h = block_hashes(PROMPT, PS)
    assert r.apply_batch(batch(A, 1, stored(PROMPT)))
    assert r.apply_batch(batch(A, 1, stored(PROMPT[:8]), dp_rank=1))
    assert r.apply_batch(batch(B, 1, stored(PROMPT[:4])))
    assert r.index.overlaps(h) == {(A, 0): 8, (A, 1): 2, (B, 0): 1}
    assert r.choose("r", PROMPT, [A, B]).overlap_blocks == 8


def test_a_worker_with_dp_ranks_gets_the_rank_holding_the_prefix():
    r = router()
    r.apply_batch(batch(A, 1, stored(PROMPT[:8])))
    r.apply_batch(batch(A, 1, stored(PROMPT[:24]), dp_rank=1))
    d = r.choose("r", PROMPT, [A])
    assert (d.instance_id, d.overlap_blocks, d.dp_rank) == (A, 6, 1)
    r.apply_batch(batch(B, 1, stored(PROMPT[:24])))  # one rank only: SGLang picks, no hint
    assert r.choose("r2", PROMPT, [B]).dp_rank is None
    assert r.choose("r3", [1, 2, 3, 4, 5], [A]).dp_rank is None  # nothing cached: no hint


def test_removed_instance_is_forgotten():
    r = router()
    r.apply_batch(batch(A, 3, stored(PROMPT)))
    r.choose("r1", PROMPT, [A])
    r.apply_load(WorkerLoad(worker_id=A, waiting=5))
    r.remove_instance(A)
    assert r.index.num_blocks == 0 and r._load(A) == 0 and A not in r.live
    assert r.apply_batch(batch(A, 1, stored(PROMPT[:4])))  # sequence state gone too
    r.finished("r1")  # a request routed before removal ends later: no negative load
    assert r._load(A) == 0


def test_approximate_mode_predicts_from_its_own_choices(monkeypatch):
    now = [1000.0]
    monkeypatch.setattr("shared.routing.kv_router.time.monotonic", lambda: now[0])
    r = router(approximate=True, approximate_ttl=60.0)
    first = r.choose("r1", PROMPT, [A, B, C])
    r.finished("r1")
    again = r.choose("r2", PROMPT, [A, B, C])
    assert again.instance_id == first.instance_id and again.overlap_blocks == 8
    r.finished("r2")
    now[0] += 61  # predictions expire
    r.choose("r3", [1, 2, 3, 4], [A])
    assert r.index.overlaps(block_hashes(PROMPT, PS)) == {}


def test_hit_blocks_are_counted():
    r = router()
    r.apply_batch(batch(A, 1, stored(PROMPT)))
    before = HIT_BLOCKS._value.get()
    r.choose("r", PROMPT, [A, B])
    assert HIT_BLOCKS._value.get() - before == 8


def test_short_prompts_and_empty_index():
    r = router()
    d = r.choose("r", [1, 2], [A])
    assert (d.instance_id, d.overlap_blocks) == (A, 0)
    assert r._load(A) == 1  # a partial block still occupies one


def test_factory_modes():
    assert isinstance(make_router("round-robin"), RoundRobinRouter)
    assert isinstance(make_router("random"), RandomRouter)
    kv = make_router("kv", page_size=32, overlap_weight=2.0, temperature=0.5, approximate=True)
    assert isinstance(kv, KvRouter) and (kv.page_size, kv.overlap_weight, kv.temperature, kv.approximate) == (
        32, 2.0, 0.5, True)
    with pytest.raises(ValueError):
        make_router("nearest")


def test_a_conversation_about_an_image_returns_to_the_worker_that_holds_it(monkeypatch):
    """EPD: the frontend cannot see the image's KV in the workers' events (the worker hashes pixels), so
    the router matches the stand-in prompt against where it sent it before, over load."""
    from shared.routing.opaque import image_routing_tokens

    now = [1000.0]
    monkeypatch.setattr("shared.routing.kv_router.time.monotonic", lambda: now[0])
    image_id, system = 7, list(range(100, 108))  # two blocks of text before the image

    def turn(urls: list[str], words: int) -> list[int]:
        prompt = [*system, image_id, *range(200, 200 + words)]
        return image_routing_tokens(prompt, image_id, 12, urls)

    r = router()
    first = r.choose("t1", turn(["http://x/cat.png"], 4), [A, B])
    # the first turn is still running there, so load alone would send the next turn elsewhere
    second = r.choose("t2", turn(["http://x/cat.png"], 12), [A, B])
    assert second.instance_id == first.instance_id and second.overlap_blocks >= 5  # 2 text + 3 image blocks
    other = r.choose("t3", turn(["http://x/dog.png"], 12), [A, B])
    assert other.instance_id != first.instance_id and other.overlap_blocks == 0  # another image: no credit
    r.remove_instance(first.instance_id)
    r.add_instance(first.instance_id)
    assert r.choose("t4", turn(["http://x/cat.png"], 12), [A, B]).overlap_blocks == 0  # forgotten with it
    for rid in ("t1", "t2", "t3", "t4"):
        r.finished(rid)
    now[0] += r.approximate_ttl + 1  # guesses expire
    cow = r.choose("t5", turn(["http://x/cow.png"], 4), [A, B])
    # of the cat conversation only the shared text prefix is guessed, where the cow prompt went just now
    assert r._guessed.overlaps(block_hashes(turn(["http://x/cat.png"], 12), PS)) == {(cow.instance_id, 0): 2}


def test_text_prompts_never_use_guesses():
    r = router()
    first = r.choose("r1", PROMPT, [A, B])
    second = r.choose("r2", PROMPT, [A, B])
    assert second.instance_id != first.instance_id and second.overlap_blocks == 0  # load decides
    assert r._guessed.num_blocks == 0
