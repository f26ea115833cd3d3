"""The KV index against a naive model of it, plus the cases a user relies on."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.kv_events import AllBlocksCleared, BlockRemoved, BlockStored
from shared.kv import block_hashes
from shared.kv.radix import KvIndex

W1, W2 = ("a", 0), ("b", 0)


def stored(tokens: list[int], ps: int = 4) -> BlockStored:
    return BlockStored(block_hashes=block_hashes(tokens, ps), token_ids=tokens[: len(tokens) // ps * ps],
                       block_size=ps)


def test_overlap_remove_clear():
    idx = KvIndex(4)
    prompt = list(range(16))
    idx.apply(W1, stored(prompt))
    idx.apply(W2, stored(prompt[:8]))
    hashes = block_hashes(prompt, 4)
    assert idx.overlaps(hashes) == {W1: 4, W2: 2}
    idx.apply(W1, BlockRemoved(block_hashes=[hashes[2]]))
    assert idx.overlaps(hashes) == {W1: 2, W2: 2}
    idx.apply(W2, AllBlocksCleared())
    assert idx.overlaps(hashes) == {W1: 2}
    idx.remove_instance("a")
    assert idx.overlaps(hashes) == {} and idx.num_blocks == 0


def naive_overlap(held: dict, hashes: list[int]) -> dict:
    out = {}
    for w, hs in held.items():
        n = 0
        while n < len(hashes) and hashes[n] in hs:
            n += 1
        if n:
            out[w] = n
    return out


def test_randomized_against_naive_model():
    rng = random.Random(1)
    idx = KvIndex(4)
    held: dict = {}
    workers = [(f"w{i}", rng.randrange(2)) for i in range(6)]
    prefixes = [[rng.randrange(30) for _ in range(rng.randrange(4, 40))] for _ in range(8)]
    for _ in range(2000):
        w = rng.choice(workers)
        op = rng.random()
        if op < 0.5:
            toks = rng.choice(prefixes)[: rng.randrange(4, 41)]
            ev = stored(toks)
            idx.apply(w, ev)
            held.setdefault(w, set()).update(ev.block_hashes)
        elif op < 0.8 and held.get(w):
            victims = rng.sample(sorted(held[w]), k=min(len(held[w]), rng.randrange(1, 4)))
            idx.apply(w, BlockRemoved(block_hashes=victims))
            held[w] -= set(victims)
        elif op < 0.85:
            idx.apply(w, AllBlocksCleared())
            held.pop(w, None)
        elif op < 0.87:
            idx.remove_instance(w[0])
            for k in [k for k in held if k[0] == w[0]]:
                held.pop(k)
        query = block_hashes(rng.choice(prefixes) + [rng.randrange(30)] * 8, 4)
        want = {k: v for k, v in naive_overlap(held, query).items()}
        assert idx.overlaps(query) == want


OPS = st.lists(st.tuples(st.sampled_from(["store", "remove", "clear", "drop"]), st.integers(0, 3),
                         st.integers(0, 2), st.integers(1, 6)), max_size=60)


@settings(max_examples=150, deadline=None)
@given(ops=OPS, query=st.integers(0, 2))
def test_any_event_order_matches_naive_model(ops, query):
    prefixes = [[p] * 4 + list(range(20)) for p in range(3)]  # three 6-block prompts, distinct from block 0
    idx = KvIndex(4)
    held: dict = {}
    for op, w, p, n in ops:
        worker = (f"w{w % 2}", w // 2)  # two instances, two dp ranks each
        hashes = block_hashes(prefixes[p], 4)[:n]
        if op == "store":
            idx.apply(worker, stored(prefixes[p][: 4 * n]))
            held.setdefault(worker, set()).update(hashes)
        elif op == "remove":
            idx.apply(worker, BlockRemoved(block_hashes=hashes[-1:]))
            held.get(worker, set()).difference_update(hashes[-1:])
        elif op == "clear":
            idx.apply(worker, AllBlocksCleared())
            held.pop(worker, None)
        else:
            idx.remove_instance(worker[0])
            held = {k: v for k, v in held.items() if k[0] != worker[0]}
    assert idx.overlaps(block_hashes(prefixes[query], 4)) == naive_overlap(held, block_hashes(prefixes[query], 4))
    assert idx.num_blocks == len(set().union(*held.values()))
    for worker, hs in held.items():
        assert idx.blocks_of(worker) == len(hs)


def test_thousands_of_unrelated_workers_do_not_match():
    idx = KvIndex(4)
    prompt = list(range(64))
    for i in range(5000):
        idx.apply((f"w{i}", 0), stored([i + 1000] * 8))  # every worker holds something else
    idx.apply(W1, stored(prompt))
    assert idx.overlaps(block_hashes(prompt, 4)) == {W1: 16}
    assert idx.overlaps(block_hashes([7] * 64, 4)) == {}
