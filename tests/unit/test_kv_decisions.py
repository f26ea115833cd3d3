"""The KV router's grouped decision path (KvIndex.match) decides exactly as the per-worker model it replaced
(prompts with opaque parts too: merged with where the router sent such prompts).

The model below is the decision as it was written before `match`: per-worker overlaps and weighted scores
from `overlaps` / `tier_depths` (checked against a naive per-block model in test_kv_tiers.py), each instance's
best rank, cost = overlap_weight * (prompt blocks - worth) + load, the cheapest at random among ties (the
same draws from the same seed), the overlap and DP rank of the chosen instance.
"""

from __future__ import annotations

import random

from protocol.kv_events import BlockRemoved, BlockStored, KvEventBatch, WorkerLoad
from shared.kv.hashing import block_hashes
from shared.kv.radix import KvIndex
from shared.routing.kv_router import KvRouter

PS = 4
WORKERS = [c * 16 for c in "abcdef"]
HEAD = list(range(1000, 1032))  # 8 blocks every prompt shares
PROMPTS = [HEAD + [7] * 4 * k + list(range(2000 + 100 * k, 2000 + 100 * k + 16)) for k in range(4)]
WEIGHTS = [(1.0, 0.0, 0.0), (1.0, 0.95, 0.3), (1.0, 0.5, 0.0), (0.9, 0.9, 0.9), (1.0, 0.0, 0.3), (0.5, 0.25, 0.1)]


def _weighted(index: KvIndex, hashes: list[int], weights: tuple[float, float, float]
              ) -> tuple[dict[tuple[str, int], int], dict[tuple[str, int], float]]:
    """Per worker the leading blocks held in a tier that weighs, and their worth, as the index scored them
    before `match` (storage counts only where storage blocks weigh; the same arithmetic, so the same ties)."""
    wg, wh, ws = weights
    depths = index.tier_depths(hashes)
    if index._masks[2] and ws > 0:
        return ({w: a for w, (_, _, a) in depths.items()},
                {w: wg * g + wh * (gh - g) + ws * (a - gh) for w, (g, gh, a) in depths.items()})
    held = {w: (g, gh) for w, (g, gh, _) in depths.items() if gh}
    return {w: gh for w, (_, gh) in held.items()}, {w: (wg - wh) * g + wh * gh for w, (g, gh) in held.items()}


def model_decision(r: KvRouter, rng: random.Random, tokens: list[int], candidates: list[str]
                   ) -> tuple[str, int, int | None]:
    hashes = block_hashes(tokens, PS)
    weights = r.tier_weights
    if not r.index.tiered or weights[1] == weights[2] == 0:
        overlaps = r.index.overlaps(hashes)
        w = weights[0]
        scores = {k: n * w for k, n in overlaps.items()} if w != 1 else dict(overlaps)
    else:
        overlaps, scores = _weighted(r.index, hashes, weights)
    if any(t < 0 for t in tokens):  # opaque parts: also where this router sent such prompts
        for key, n in r._guessed.overlaps(hashes).items():
            overlaps[key] = max(n, overlaps.get(key, 0))
            scores[key] = max(n * weights[0], scores.get(key, 0))
    worth: dict[str, float] = {}
    for (iid, _), n in scores.items():
        if n > worth.get(iid, 0):
            worth[iid] = n
    costs = [r.overlap_weight * (len(hashes) - worth.get(c, 0)) + r._loads.get(c, 0) for c in candidates]
    best = rng.choice([c for c, cost in zip(candidates, costs, strict=True) if cost == min(costs)])
    by_rank = {rank: scores.get((iid, rank), 0.0) for (iid, rank) in overlaps if iid == best}
    overlap = max((n for (iid, _), n in overlaps.items() if iid == best), default=0)
    ranks = len(r._last_seq.get(best, ()))
    dp_rank = max(by_rank, key=lambda k: (by_rank[k], -k)) if ranks > 1 and overlap else None
    return best, overlap, dp_rank


def _random_events(r: KvRouter, rng: random.Random, seqs: dict[tuple[str, int], int]) -> None:
    for _ in range(rng.randint(5, 40)):
        worker, rank = rng.choice(WORKERS), rng.choice([0, 0, 0, 1])
        hashes = block_hashes(rng.choice(PROMPTS), PS)
        lo = rng.choice([0, 0, rng.randrange(len(hashes))])
        part = hashes[lo : rng.randint(lo + 1, len(hashes))]
        medium = rng.choice(["gpu", "gpu", "gpu", "host", "storage"])
        seqs[(worker, rank)] = seqs.get((worker, rank), 0) + 1
        event = BlockStored(block_hashes=part, token_ids=[], block_size=PS, medium=medium) if rng.random() < 0.75 \
            else BlockRemoved(block_hashes=part, medium=medium)
        r.apply_batch(KvEventBatch(worker_id=worker, seq=seqs[(worker, rank)], events=[event], dp_rank=rank))
    for worker in WORKERS:
        if rng.random() < 0.5:
            r.apply_load(WorkerLoad(worker_id=worker, kv_used_blocks=rng.choice([0, 2, 5, 20]),
                                    waiting=rng.choice([0, 0, 1])))


def test_grouped_decisions_equal_the_per_worker_model():
    rng = random.Random(23)
    decided = set()
    for trial in range(150):
        weights = WEIGHTS[trial % len(WEIGHTS)]
        r = KvRouter(page_size=PS, overlap_weight=rng.choice([1.0, 4.0, 0.5]), seed=trial, tier_weights=weights)
        model_rng = random.Random(trial)  # the router's seed: the same draws, or the choices part
        for w in WORKERS:
            r.add_instance(w)
        seqs: dict[tuple[str, int], int] = {}
        for step in range(12):
            if step % 4 == 1:  # step 0 decides on an empty index
                _random_events(r, rng, seqs)
            tokens = rng.choice(PROMPTS)[: rng.choice([4, 20, 40, 200])]
            if rng.random() < 0.2:  # an image not yet expanded: a stand-in of negative ids (shared.routing.opaque)
                tokens = tokens[:12] + [-3] * 8 + tokens[12:]
            candidates = rng.sample(WORKERS, rng.randint(1, len(WORKERS)))
            want = model_decision(r, model_rng, tokens, candidates)
            d = r.choose(f"r{trial}-{step}", tokens, candidates)
            assert (d.instance_id, d.overlap_blocks, d.dp_rank) == want, (trial, step, weights)
            decided.add((d.overlap_blocks > 0, d.dp_rank is not None, r.index.tiered))
            if rng.random() < 0.5:
                r.finished(f"r{trial}-{step}")
    # the trials reached cached and uncached choices, DP rank hints, with and without lower tiers
    assert {(True, True, True), (True, False, True), (False, False, False), (True, False, False)} <= decided


def test_instance_slots_follow_workers_and_ranks():
    r = KvRouter(page_size=PS)
    h = block_hashes(HEAD, PS)
    r.apply_batch(KvEventBatch(worker_id=WORKERS[0], seq=1, events=[BlockStored(block_hashes=h, token_ids=[])]))
    r.apply_batch(KvEventBatch(worker_id=WORKERS[0], seq=1, dp_rank=1,
                               events=[BlockStored(block_hashes=h[:2], token_ids=[])]))
    r.apply_batch(KvEventBatch(worker_id=WORKERS[1], seq=1, events=[BlockStored(block_hashes=h, token_ids=[])]))
    idx = r.index
    assert bin(idx.bits_of(WORKERS[0])).count("1") == 2 and bin(idx.bits_of(WORKERS[1])).count("1") == 1
    groups = idx.match(h, r.tier_weights)
    assert sorted((bin(m).count("1"), d) for m, d, _ in groups) == [(1, 2), (2, 8)]
    idx.remove_worker((WORKERS[0], 1))
    assert bin(idx.bits_of(WORKERS[0])).count("1") == 1
    r.remove_instance(WORKERS[0])
    assert idx.bits_of(WORKERS[0]) == 0 and [(bin(m).count("1"), d) for m, d, _ in idx.match(h, r.tier_weights)] \
        == [(1, 8)]


def test_a_block_held_by_one_worker_shares_its_slots_int():
    """Memory: a block only one worker holds stores that slot's own int, not an int of its own (also once
    the other holders of a shared block drop it); the masks' values are unchanged."""
    idx = KvIndex(PS)
    h = block_hashes(HEAD, PS)
    for i in range(12):  # slots 0..11: 1 << 10 and 1 << 11 are past the interpreter's cached small ints
        idx.apply((f"w{i}", 0), BlockStored(block_hashes=h[:1], token_ids=[]))
    a, b = ("w10", 0), ("w11", 0)
    idx.apply(a, BlockStored(block_hashes=h[:4], token_ids=[]))
    idx.apply(b, BlockStored(block_hashes=h, token_ids=[]))
    masks = idx._masks[0]
    bit_a, bit_b = 1 << 10, 1 << 11
    assert [masks[x] for x in h[1:]] == [bit_a | bit_b] * 3 + [bit_b] * 4
    assert masks[h[4]] is masks[h[7]]  # b's own int
    idx.apply(b, BlockRemoved(block_hashes=h[1:3]))
    assert [masks[x] for x in h[1:]] == [bit_a, bit_a, bit_a | bit_b] + [bit_b] * 4
    assert masks[h[1]] is masks[h[2]]  # a's own int, once b left them
    assert idx.overlaps(h) == {a: 4, ("w11", 0): 1, **{(f"w{i}", 0): 1 for i in range(10)}}
