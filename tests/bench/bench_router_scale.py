"""Router decision time with admission on, at 64 workers / 1M blocks and 512 workers / 8M blocks.

python -m tests.bench.bench_router_scale [--sizes 64:1000000 512:8000000] [--tiers on off] [--passes 3] [--runs 1]
                                        [--no-report]

Each size: a KV index holding the workload's shared prefixes on every worker plus unique blocks up to the size
(random hashes: the index does not care where a hash comes from), then 2000 decisions for prompts of 72 blocks
through `RouterOptions.make`'s whole stack as a frontend builds it on a real nats-server: the KV router,
session affinity shared in JetStream KV (half the requests name one of 10,000 sessions), the busy thresholds
(1 worker in 16 busy) and the admission queue (empty: nobody waits, the path measured is the admission check).
A first pass creates the sessions (a KV write each: its round trip is reported apart); the measured passes
find them in the local mirror. Each of the 2000 requests is measured in `--passes` passes (CPU time of the
thread, and wall); its time is the least of them: on a shared machine another process's work (a cache flushed,
a vCPU stolen) lands on one request in one pass at random, not on the same request in every pass, so the least
is the router's own cost and the spread across requests is kept (a slow request is slow in every pass). The
first measured pass alone is reported too (`one_pass_*`), and the premise is checked each run: the slowest 1%
of the first pass's requests timed again in the second (`one_pass_slowest_1pct_rerun_cpu_p50_us`, near the p50
when the tail is the machine's, near the one-pass p99 if it were the requests'). Reports decision p50/p99, the
KV choice alone on the same index (least of the passes likewise), the index memory per entry (a block counts
once per tier holding it): its maps' tables, key and mask ints and the per-worker hash sets as allocated
(sys.getsizeof: reserved table room too; the same in every run), the RSS growth while filling (only the first
size's first run starts from a clean heap), and the load average.
`--runs R` repeats each size R times (a row each). Exits 1 when the median over runs of the CPU p99 is
150 us or more at 64 workers or 500 us or more at 512. Tiers on (the default weights,
shared/routing/tiers.py): on every second worker holding a shared prefix its last 16 blocks moved from
GPU to host (stored host, removed gpu, as the reference engine's host tier sends them), and a quarter of
the unique blocks are host blocks, so decisions take the tier walk (shared.kv.radix.KvIndex.match); tiers
off: every block on GPU (the one-mask walk, as before tiers).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import psutil

from protocol.kv_events import BlockRemoved, BlockStored, KvEventBatch, WorkerLoad
from shared.cluster.natsd import NatsServer
from shared.config.args import NatsOptions
from shared.kv.hashing import block_hashes
from shared.kv.radix import KvIndex
from shared.routing.admission import AdmissionQueue, Ticket
from shared.routing.kv_router import KvRouter
from shared.routing.options import RouterOptions
from shared.routing.tiers import DEFAULT_TIER_WEIGHTS, parse_tier_weights
from shared.runtime import Runtime
from tests.bench.loadgen import percentile
from tests.bench.routing_results import save
from tests.bench.workload import Workload, WorkloadSpec

PS = 16
BARS = {64: 150.0, 512: 500.0}


def _spec(suffix_blocks: int) -> WorkloadSpec:
    return WorkloadSpec(users=10_000, prefixes=200, prefix_tokens=PS * 64, history_tokens=0,
                        suffix_tokens=PS * suffix_blocks)


def fill(kv: KvRouter, ids: list[str], total_blocks: int, tiers: bool) -> float:
    """Bytes of RSS per index entry (a block in a tier)."""
    gc.collect()
    rss0 = psutil.Process().memory_info().rss
    seqs = dict.fromkeys(ids, 0)
    prefixes = Workload(_spec(0))
    seen = set()
    for _ in range(2000):
        req = prefixes.next()
        hashes = block_hashes(req.token_ids, PS)
        if hashes[-1] in seen:
            continue
        seen.add(hashes[-1])
        for n, iid in enumerate(ids[:: max(1, len(ids) // 32)]):  # every prefix on a few workers
            seqs[iid] += 1
            events = [BlockStored(block_hashes=hashes, token_ids=[], block_size=PS)]
            if tiers and n % 2:  # the tail went to host
                events += [BlockStored(block_hashes=hashes[-16:], token_ids=[], block_size=PS, medium="host"),
                           BlockRemoved(block_hashes=hashes[-16:])]
            kv.apply_batch(KvEventBatch(worker_id=iid, seq=seqs[iid], events=events))
    rng = random.Random(0)
    per_worker = max(0, (total_blocks - kv.index.num_blocks)) // len(ids)
    for iid in ids:
        for start in range(0, per_worker, 4096):
            seqs[iid] += 1
            hashes = [rng.getrandbits(63) for _ in range(min(4096, per_worker - start))]
            medium = "host" if tiers and start % (4 * 4096) == 0 else "gpu"
            kv.apply_batch(KvEventBatch(worker_id=iid, seq=seqs[iid], events=[
                BlockStored(block_hashes=hashes, token_ids=[], block_size=PS, medium=medium)]))
    gc.collect()
    return (psutil.Process().memory_info().rss - rss0) / max(1, kv.index.entries)


def index_bytes(index: KvIndex) -> int:
    """What the index holds: each tier's map (table, key and mask ints) and each worker's set of hashes (table;
    its ints are the maps' keys)."""
    size = sys.getsizeof
    shared = {id(b) for b in index._bits}  # a slot's own int, stored for every block only it holds: counted once
    total = sum(size(b) for b in index._bits)
    for masks, held in zip(index._masks, index._held, strict=True):
        total += size(masks) + sum(size(k) + (0 if id(v) in shared else size(v)) for k, v in masks.items())
        total += size(held) + sum(size(hs) for hs in held.values())
    return total


async def one_size(url: str, workers: int, total_blocks: int, tiers: bool, passes: int = 3) -> dict:
    rt = await Runtime.connect(NatsOptions(url=url), f"scale{workers}", "bench")
    opts = RouterOptions(mode="kv", session_ttl=600, active_decode_blocks_threshold=0.9,
                         active_prefill_tokens_threshold=100_000, queue_size=256)
    router = opts.make(runtime=rt, component="backend", page_size=PS)
    assert isinstance(router, AdmissionQueue)
    ids = [f"{i:016x}" for i in range(workers)]
    await router.start()
    kv = router.inner.inner.inner  # AdmissionQueue -> BusyRouter -> SharedSessionAffinity -> KvRouter
    assert isinstance(kv, KvRouter)
    for iid in ids:
        router.add_instance(iid)
        router.set_capacity(iid, 1_000_000)
        router.inner.apply_load(WorkerLoad(worker_id=iid, kv_used_blocks=950_000 if iid in ids[::16] else 1000,
                                           kv_total_blocks=1_000_000))
    t0 = time.monotonic()
    assert kv.tier_weights == parse_tier_weights(DEFAULT_TIER_WEIGHTS)
    rss_per_entry = fill(kv, ids, total_blocks, tiers)
    per_entry = index_bytes(kv.index) / max(1, kv.index.entries)
    assert kv.index.tiered == tiers
    fill_s = time.monotonic() - t0
    ask = list(Workload(_spec(8)).requests(2000))
    free = [i for i in ids if i not in ids[::16]]

    async def run(tag: str) -> tuple[list[float], list[float]]:
        wall, cpu = [], []
        for i, req in enumerate(ask):
            session = f"u{req.user}" if i % 2 else ""
            t, c = time.perf_counter(), time.thread_time()
            await router.admit(f"{tag}{i}", req.token_ids, ids, session_id=session, ticket=Ticket(priority=i % 3))
            wall.append(time.perf_counter() - t)
            cpu.append(time.thread_time() - c)
            router.finished(f"{tag}{i}")
        return wall, cpu

    first_wall, _ = await run("a")  # creates the sessions in the bucket
    await asyncio.sleep(1.0)  # the watch has delivered the first pass's writes
    measured = [await run(f"b{p}-") for p in range(passes)]
    wall = [min(ts) for ts in zip(*(m[0] for m in measured), strict=True)]  # per request: the least of the passes
    cpu = [min(ts) for ts in zip(*(m[1] for m in measured), strict=True)]
    alone = []  # the KV choice alone, same index, same moment: what the machine allows
    for p in range(passes):
        alone.append([])
        for i, req in enumerate(ask):
            c = time.thread_time()
            kv.choose(f"c{p}-{i}", req.token_ids, ids)
            alone[-1].append(time.thread_time() - c)
            kv.finished(f"c{p}-{i}")
    base_cpu = [min(ts) for ts in zip(*alone, strict=True)]
    # the least-of-passes premise, checked each run: pass 1's slowest 1% of requests, timed again in pass 2
    slowest = sorted(range(len(ask)), key=lambda i: -measured[0][1][i])[: max(1, len(ask) // 100)]
    rerun = [measured[1][1][i] for i in slowest] if passes > 1 else []
    await router.stop()
    await rt.close()
    us = lambda xs, q: round(percentile(xs, q) * 1e6, 1)  # noqa: E731
    host = sum(kv.index.blocks_of((i, 0), "host") for i in ids)
    return {"workers": workers, "tiers": "on" if tiers else "off", "indexed_blocks": kv.index.entries,
            "host_blocks": host, "fill_s": round(fill_s, 1),
            "index_alloc_bytes_per_entry": round(per_entry, 1), "rss_growth_bytes_per_entry": round(rss_per_entry, 1),
            "free_workers": len(free), "passes": passes,
            "decision_p50_us": us(wall, 50), "decision_p99_us": us(wall, 99),
            "decision_cpu_p50_us": us(cpu, 50), "decision_cpu_p99_us": us(cpu, 99),
            "one_pass_cpu_p50_us": us(measured[0][1], 50), "one_pass_cpu_p99_us": us(measured[0][1], 99),
            "one_pass_slowest_1pct_rerun_cpu_p50_us": us(rerun, 50) if rerun else None,
            "kv_choice_alone_cpu_p50_us": us(base_cpu, 50), "kv_choice_alone_cpu_p99_us": us(base_cpu, 99),
            "first_pass_p50_us": us(first_wall, 50), "first_pass_p99_us": us(first_wall, 99),
            "load_average": round(__import__("os").getloadavg()[0], 1),
            "bar_cpu_p99_us": BARS.get(workers)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", nargs="+", default=["64:1000000", "512:8000000"])
    ap.add_argument("--tiers", nargs="+", choices=("on", "off"), default=["on", "off"])
    ap.add_argument("--passes", type=int, default=3, help="measured passes; a request's time is the least")
    ap.add_argument("--runs", type=int, default=1, help="each size this many times (a row each)")
    ap.add_argument("--no-report", action="store_true")
    a = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="shoal-scale-") as tmp:
        nats = NatsServer(Path(tmp) / "nats").start()
        try:
            for size in a.sizes:
                w, b = (int(x) for x in size.split(":"))
                for run in range(a.runs):
                    for tiers in a.tiers:
                        rows.append({"run": run + 1, **asyncio.run(one_size(nats.url, w, b, tiers == "on", a.passes))})
                        print(rows[-1], flush=True)
                        gc.collect()
        finally:
            nats.stop()
    checks = {}
    for key in dict.fromkeys((r["workers"], r["tiers"]) for r in rows if r["bar_cpu_p99_us"]):
        runs = [r for r in rows if (r["workers"], r["tiers"]) == key]
        p99 = statistics.median(r["decision_cpu_p99_us"] for r in runs)
        checks[f"{key[0]} workers, tiers {key[1]}: CPU p99 (median of {len(runs)} runs: {p99:g}) < "
               f"{runs[0]['bar_cpu_p99_us']} us"] = p99 < runs[0]["bar_cpu_p99_us"]
    print(checks)
    save("7_router_scale", "7. Router decision with session affinity (shared), busy thresholds, the queue and tiers",
         {"rows": rows, "path": "AdmissionQueue > BusyRouter > SharedSessionAffinity > KvRouter (tier weights "
                                f"{DEFAULT_TIER_WEIGHTS})"},
         checks, scratch=a.no_report)
    if not all(checks.values()):
        print("FAIL:", [k for k, ok in checks.items() if not ok], file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
