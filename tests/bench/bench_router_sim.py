"""Routing quality without processes: simulated workers' caches, real router, many users.

python -m tests.bench.bench_router_sim [--workers 16 --users 256 --prefixes 32 --requests 4000]

Each worker is a BlockPool (LRU eviction, real KV events fed straight back to the
router); `--in-flight` requests are held at once, so load exists for the router
to balance. Prints, per mode, the fraction of prompt tokens found cached and the
spread of requests over workers (busiest / mean).
"""

from __future__ import annotations

import argparse
from collections import Counter, deque

from shared.kv.block_pool import BlockPool, BlockTable
from shared.routing import make_router
from shared.routing.base import Router
from shared.routing.kv_router import KvRouter
from tests.bench.workload import Workload, WorkloadSpec, reusable_fraction

PS = 16


class SimWorker:
    def __init__(self, iid: str, router: Router, num_blocks: int) -> None:
        self.iid = iid
        self.seq = 0
        self.router = router
        self.pool = BlockPool(num_blocks, PS, sink=self._events)

    def _events(self, events: list) -> None:
        if isinstance(self.router, KvRouter) and not self.router.approximate:
            from protocol.kv_events import KvEventBatch

            self.seq += 1
            self.router.apply_batch(KvEventBatch(worker_id=self.iid, seq=self.seq, events=events))

    def admit(self, tokens: list[int]) -> BlockTable | None:
        table = self.pool.allocate(tokens)
        if table is not None:
            self.pool.commit(table, tokens)
        return table


def simulate(mode: str, spec: WorkloadSpec, workers: int, num_blocks: int, requests: int, in_flight: int,
             overlap_weight: float = 1.0) -> dict:
    router = make_router(mode.removesuffix("-approx"), page_size=PS, overlap_weight=overlap_weight,
                         approximate=mode.endswith("-approx"))
    sims = {f"{i:016x}": None for i in range(workers)}
    for iid in sims:
        router.add_instance(iid)
        sims[iid] = SimWorker(iid, router, num_blocks)
    ids = list(sims)
    held: deque[tuple[str, SimWorker, BlockTable]] = deque()
    per_worker: Counter[str] = Counter()
    cached = total = 0
    for i, req in enumerate(Workload(spec).requests(requests)):
        if len(held) >= in_flight:
            rid, w, t = held.popleft()
            w.pool.free(t)
            router.finished(rid)
        iid = router.choose(f"r{i}", req.token_ids, ids).instance_id
        table = sims[iid].admit(req.token_ids)
        per_worker[iid] += 1
        total += len(req.token_ids)
        if table is None:  # the worker is full: it would queue; count it as uncached
            router.finished(f"r{i}")
            continue
        cached += table.num_cached_tokens
        held.append((f"r{i}", sims[iid], table))
    return {"mode": mode, "cached_frac": round(cached / total, 3),
            "busiest_over_mean": round(max(per_worker.values()) / (requests / workers), 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workers", type=int, default=16)
    ap.add_argument("--users", type=int, default=256)
    ap.add_argument("--prefixes", type=int, default=32)
    ap.add_argument("--prefix-tokens", type=int, default=1024)
    ap.add_argument("--history-tokens", type=int, default=512)
    ap.add_argument("--suffix-tokens", type=int, default=64)
    ap.add_argument("--num-blocks", type=int, default=1024, help="KV blocks per worker")
    ap.add_argument("--requests", type=int, default=4000)
    ap.add_argument("--in-flight", type=int, default=32)
    ap.add_argument("--overlap-weight", type=float, default=4.0, help="as the frontend's default")
    a = ap.parse_args()
    spec = WorkloadSpec(users=a.users, prefixes=a.prefixes, prefix_tokens=a.prefix_tokens,
                        history_tokens=a.history_tokens, suffix_tokens=a.suffix_tokens)
    bound = reusable_fraction(list(Workload(spec).requests(a.requests)), PS)
    print(f"{a.workers} workers x {a.num_blocks} blocks, {a.users} users, {a.prefixes} prefixes, "
          f"{a.requests} requests, overlap weight {a.overlap_weight}; "
          f"one unbounded cache would hit {bound:.3f} of blocks")
    print("| mode | cached fraction | busiest worker / mean |\n|---|---:|---:|")
    for mode in ("round-robin", "random", "kv", "kv-approx"):
        r = simulate(mode, spec, a.workers, a.num_blocks, a.requests, a.in_flight, a.overlap_weight)
        print(f"| {r['mode']} | {r['cached_frac']} | {r['busiest_over_mean']} |", flush=True)


if __name__ == "__main__":
    main()
