"""What bench_fleet reads off running processes: nats-server monitoring (/varz, /jsz), /proc, /metrics."""

from __future__ import annotations

import json
import os
import re
import time
import urllib.request
from dataclasses import dataclass

TICK = os.sysconf("SC_CLK_TCK")


def _get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.loads(r.read())


@dataclass
class Rates:
    msgs: float  # in + out, a second
    bytes: float
    in_msgs: float
    out_msgs: float
    js_store: int  # bytes JetStream stores now (all nodes)


@dataclass
class Varz:
    in_msgs: int
    out_msgs: int
    in_bytes: int
    out_bytes: int
    js_store: int

    def rate(self, before: Varz, dt: float) -> Rates:
        im, om = (self.in_msgs - before.in_msgs) / dt, (self.out_msgs - before.out_msgs) / dt
        by = (self.in_bytes - before.in_bytes + self.out_bytes - before.out_bytes) / dt
        return Rates(im + om, by, im, om, self.js_store)


def varz(monitors: list[str]) -> Varz:
    """Counters of every node, summed (a cluster's route traffic included)."""
    tot = Varz(0, 0, 0, 0, 0)
    for m in monitors:
        v = _get(f"{m}/varz")
        tot.in_msgs += v["in_msgs"]
        tot.out_msgs += v["out_msgs"]
        tot.in_bytes += v["in_bytes"]
        tot.out_bytes += v["out_bytes"]
        tot.js_store += int(_get(f"{m}/jsz").get("storage", 0))
    return tot


def kv_backlog(monitor: str) -> dict:
    """Messages JetStream consumers have not yet delivered/had acknowledged (the routers' KV-event ingest
    backlog, and the discovery watchers'), the largest and the total."""
    j = _get(f"{monitor}/jsz?consumers=true")
    pending = []
    for acct in j.get("account_details", []):
        for st in acct.get("stream_detail", []):
            for c in st.get("consumer_detail", []) or []:
                pending.append(int(c.get("num_pending", 0)) + int(c.get("num_ack_pending", 0)))
    return {"max_pending": max(pending, default=0), "total_pending": sum(pending), "consumers": len(pending)}


class ProcStat:
    """CPU (% of one core) and resident memory of some processes, from /proc."""

    def __init__(self, pids: list[int]) -> None:
        self.pids = pids
        self.t0, self.c0 = time.monotonic(), self._ticks()

    def _ticks(self) -> int:
        total = 0
        for pid in self.pids:
            try:
                fields = open(f"/proc/{pid}/stat").read().rpartition(")")[2].split()
                total += int(fields[11]) + int(fields[12])  # utime, stime
            except OSError:
                pass
        return total

    def cpu_pct(self) -> float:
        return 100.0 * (self._ticks() - self.c0) / TICK / max(1e-9, time.monotonic() - self.t0)

    def rss_mb(self) -> float:
        total = 0
        for pid in self.pids:
            try:
                for line in open(f"/proc/{pid}/status"):
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
            except OSError:
                pass
        return total / 1024


_BUCKET = re.compile(r'^shoal_router_decision_seconds_bucket\{(?:.*,)?le="([^"]+)"(?:,.*)?\}\s+([0-9.eE+]+)$')


def decision_p99(metrics: str, q: float = 0.99) -> float | None:
    """The router's decision-time quantile in ms, interpolated in its histogram bucket (as Prometheus'
    histogram_quantile does); None without decisions."""
    buckets: dict[float, float] = {}
    for line in metrics.splitlines():
        m = _BUCKET.match(line)
        if m:
            le = float("inf") if m.group(1) == "+Inf" else float(m.group(1))
            buckets[le] = buckets.get(le, 0.0) + float(m.group(2))
    if not buckets or buckets.get(float("inf"), 0) == 0:
        return None
    total = buckets[float("inf")]
    want = q * total
    prev_le, prev_c = 0.0, 0.0
    for le in sorted(buckets):
        c = buckets[le]
        if c >= want:
            if le == float("inf"):
                return round(prev_le * 1000, 4)
            frac = (want - prev_c) / (c - prev_c) if c > prev_c else 1.0
            return round((prev_le + (le - prev_le) * frac) * 1000, 4)
        prev_le, prev_c = le, c
    return None


def decision_times(n: int, decisions: int = 2000, seed: int = 0) -> dict:
    """The KV router's decision over N candidates, in this process: p50/p99 of thread CPU time (the
    decision's own cost) and of wall time (plus whatever preempts it on a shared machine). A tenth of
    the workers hold cached prefixes; every worker reports a load."""
    import random

    from protocol.kv_events import BlockStored, KvEventBatch, WorkerLoad
    from shared.kv.hashing import pack_tokens, packed_block_hashes
    from shared.routing.kv_router import KvRouter

    rng = random.Random(seed)
    router = KvRouter(seed=seed)
    cands = [f"{i:016x}" for i in range(n)]
    prefixes = [[rng.randrange(30000) for _ in range(64)] for _ in range(32)]
    for i, iid in enumerate(cands):
        router.apply_load(WorkerLoad(worker_id=iid, running=i % 3, waiting=0, kv_used_blocks=i % 50,
                                     kv_total_blocks=16384))
        if i % 10 == 0:
            hashes = packed_block_hashes(pack_tokens(prefixes[i % 32]), router.page_size)
            router.apply_batch(KvEventBatch(worker_id=iid, seq=1, events=[
                BlockStored(block_hashes=hashes, token_ids=[], block_size=router.page_size)]))
    wall, cpu = [], []
    for i in range(decisions):
        toks = prefixes[rng.randrange(32)] + [rng.randrange(30000) for _ in range(32)]
        t, c = time.perf_counter(), time.thread_time()
        router.choose(f"r{i}", toks, cands)
        cpu.append(time.thread_time() - c)
        wall.append(time.perf_counter() - t)
        router.finished(f"r{i}")
    cpu.sort()
    wall.sort()

    def q(xs: list[float], p: float) -> float:
        return round(xs[min(len(xs) - 1, int(p * len(xs)))] * 1000, 4)

    return {"cpu_p50_ms": q(cpu, 0.5), "cpu_p99_ms": q(cpu, 0.99), "wall_p50_ms": q(wall, 0.5),
            "wall_p99_ms": q(wall, 0.99), "decisions": decisions}
