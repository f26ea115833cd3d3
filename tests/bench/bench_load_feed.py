"""One load subscription per process vs one per consumer (real nats-server).

python -m tests.bench.bench_load_feed [--reports 20000] [--no-report]

Three consumers of worker load live in one process (the KV router, the busy filter, the planner's
view). Before: each subscribed and decoded every `WorkerLoad` itself. Now: shared.routing.load_feed
decodes once and feeds all three. Publishes the same reports (1 in 100 undecodable) to both setups and
reports messages received, decodes, the consumer time per report (inside the NATS callbacks), the
process CPU per report spent receiving (publishing alone taken off) and the undecodable counter.
Exits 1 unless the feed decodes once per report, counts every bad one, and costs less receive CPU
per report than three subscriptions.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from protocol import codec, subjects
from protocol.kv_events import WorkerLoad
from shared.cluster.natsd import NatsServer
from shared.config.args import NatsOptions
from shared.routing.busy import BusyFilter
from shared.routing.kv_router import KvRouter
from shared.routing.load_feed import DECODED, UNDECODABLE, LoadFeed
from shared.runtime import Runtime
from tests.bench.routing_results import save

NS = "lfbench"
WORKERS = [f"{i:016x}" for i in range(64)]


def consumers() -> list[Any]:
    kv, busy, planner = KvRouter(), BusyFilter(16, kv_fraction=0.9), {}
    return [kv.apply_load, busy.apply_load, lambda w: planner.__setitem__((w.worker_id, w.dp_rank), w)]


async def publish(pub: Runtime, n: int) -> int:
    bad = 0
    for i in range(n):
        w = WORKERS[i % len(WORKERS)]
        if i % 100 == 99:
            data, bad = b"\xc1garbage", bad + 1
        else:
            data = codec.encode(WorkerLoad(worker_id=w, running=i % 7, kv_used_blocks=i % 500, kv_total_blocks=1000))
        await pub.nc.publish(subjects.load_subject(NS, "backend", w), data)
        if i % 1000 == 0:
            await pub.nc.flush()
    await pub.nc.flush()
    return bad


async def settled(done: asyncio.Event, got: list[int]) -> None:
    """Until every message arrived, or none did for 2 s (a loaded machine: NATS drops for slow consumers)."""
    last, quiet = -1, 0.0
    while not done.is_set() and quiet < 2.0:
        await asyncio.sleep(0.1)
        quiet = quiet + 0.1 if got[0] == last else 0.0
        last = got[0]


async def publish_only(url: str, n: int) -> float:
    """CPU of publishing alone (taken off both setups' process CPU: the publisher shares the process)."""
    rt = await Runtime.connect(NatsOptions(url=url), NS, "base")
    c0 = time.process_time()
    await publish(rt, n)
    cpu = time.process_time() - c0
    await rt.close()
    return cpu


async def per_consumer(url: str, n: int) -> dict[str, Any]:
    """Today's shape: three subscriptions, each decoding (bad ones dropped silently)."""
    rt = await Runtime.connect(NatsOptions(url=url), NS, "old")
    pub = await Runtime.connect(NatsOptions(url=url), NS, "pub")
    spent, got, decodes = [0.0], [0], [0]
    done = asyncio.Event()

    def sub_for(fn: Any) -> Any:
        async def cb(msg: Any) -> None:
            t0 = time.perf_counter()
            got[0] += 1
            try:
                load = codec.decode(msg.data, WorkerLoad)
                decodes[0] += 1
                fn(load)
            except Exception:
                pass
            spent[0] += time.perf_counter() - t0
            if got[0] == 3 * n:
                done.set()
        return cb

    subs = [await rt.nc.subscribe(subjects.load_filter(NS, "backend"), cb=sub_for(fn)) for fn in consumers()]
    await rt.nc.flush()
    c0 = time.process_time()
    await publish(pub, n)
    await settled(done, got)
    cpu = time.process_time() - c0
    for s in subs:
        await s.unsubscribe()
    await pub.close()
    await rt.close()
    return {"setup": "one subscription per consumer (before)", "subscriptions": 3, "messages_in": got[0],
            "decodes": decodes[0], "undecodable_counted": 0, "consumer_us_per_report": round(spent[0] / n * 1e6, 2),
            "process_cpu_s": round(cpu, 3)}


async def shared_feed(url: str, n: int) -> dict[str, Any]:
    rt = await Runtime.connect(NatsOptions(url=url), NS, "new")
    pub = await Runtime.connect(NatsOptions(url=url), NS, "pub2")
    feed = LoadFeed.of(rt)
    spent = [0.0]
    bad0, dec0 = UNDECODABLE._value.get(), DECODED._value.get()
    removes = [await feed.add("backend", fn) for fn in consumers()]
    sub = feed._subs["backend"]
    inner = sub._cb
    done = asyncio.Event()
    got, bad_in = [0], [0]

    async def timed(msg: Any) -> None:
        t0 = time.perf_counter()
        got[0] += 1
        bad_in[0] += msg.data.startswith(b"\xc1")
        await inner(msg)
        spent[0] += time.perf_counter() - t0
        if got[0] == n:
            done.set()
    sub._cb = timed
    await rt.nc.flush()
    c0 = time.process_time()
    bad = await publish(pub, n)
    await settled(done, got)
    cpu = time.process_time() - c0
    for r in removes:
        await r()
    await pub.close()
    await rt.close()
    return {"setup": "one LoadFeed subscription (now)", "subscriptions": 1, "messages_in": got[0],
            "decodes": int(DECODED._value.get() - dec0),
            "undecodable_counted": int(UNDECODABLE._value.get() - bad0), "undecodable_sent": bad,
            "undecodable_received": bad_in[0],
            "consumer_us_per_report": round(spent[0] / n * 1e6, 2), "process_cpu_s": round(cpu, 3)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reports", type=int, default=20000)
    ap.add_argument("--no-report", action="store_true")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="shoal-lf-") as tmp:
        nats = NatsServer(Path(tmp) / "nats").start()
        try:
            base = asyncio.run(publish_only(nats.url, a.reports))
            old = asyncio.run(per_consumer(nats.url, a.reports))
            new = asyncio.run(shared_feed(nats.url, a.reports))
        finally:
            nats.stop()
    for row in (old, new):
        row["receive_cpu_us_per_report"] = round(max(0.0, row.pop("process_cpu_s") - base) / a.reports * 1e6, 2)
    new["dropped_by_nats"] = a.reports - new["messages_in"]
    checks = {"decoded once per report received": new["decodes"] + new["undecodable_counted"] == new["messages_in"],
              "every undecodable report counted": new["undecodable_counted"] == new["undecodable_received"] > 0,
              "less receive CPU than 3 subscriptions":
                  new["receive_cpu_us_per_report"] < old["receive_cpu_us_per_report"],
              "messages in: a third of three subscriptions'": new["messages_in"] * 3 <= old["messages_in"] + 3 * 200}
    print(old, new, checks, sep="\n")
    save("1_load_feed", "1. One load subscription per process", {"rows": [old, new], "reports": a.reports},
         checks, scratch=a.no_report)
    if not all(checks.values()):
        print("FAIL:", [k for k, ok in checks.items() if not ok], file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
