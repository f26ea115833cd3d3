"""One load subscription per process: every consumer gets the same decoded report; bad ones are counted."""

from __future__ import annotations

import asyncio

from protocol import codec, subjects
from protocol.kv_events import WorkerLoad
from shared.cluster.natsd import NatsServer
from shared.config.args import NatsOptions
from shared.routing import make_router
from shared.routing.busy import BusyFilter
from shared.routing.busy_router import BusyRouter
from shared.routing.load_feed import UNDECODABLE, LoadFeed
from shared.runtime import Runtime

NS = "loadfeed"
W = "1" * 16


async def _run(url: str) -> None:
    rt = await Runtime.connect(NatsOptions(url=url), NS, "test")
    pub = await Runtime.connect(NatsOptions(url=url), NS, "worker")
    try:
        kv = make_router("kv", runtime=rt, component="backend", page_size=16)
        busy = BusyRouter(make_router("round-robin"), BusyFilter(16, kv_fraction=0.5), rt, "backend")
        planner_seen: list[WorkerLoad] = []
        feed = LoadFeed.of(rt)
        remove_planner = await feed.add("*", planner_seen.append)
        for r in (kv, busy):
            r.add_instance(W)
            await r.start()
        assert feed.subscriptions == 2  # "backend" (both routers) and "*" (the planner's view)
        before = UNDECODABLE._value.get()
        subject = subjects.load_subject(NS, "backend", W)
        await pub.nc.publish(subject, b"\xc1 not msgpack")
        await pub.nc.publish(subject, codec.encode(WorkerLoad(worker_id=W, kv_used_blocks=90, kv_total_blocks=100)))
        await pub.nc.flush()
        for _ in range(100):
            if planner_seen and kv._reported.get(W) is not None and busy.busy.busy(W):
                break
            await asyncio.sleep(0.02)
        assert kv._reported[W].kv_used_blocks == 90
        assert busy.busy.busy(W)  # 90 of 100 blocks, past 0.5
        assert [w.kv_used_blocks for w in planner_seen] == [90]
        assert kv._reported[W] is busy.busy._reported[W]  # decoded once, the same struct for both
        assert UNDECODABLE._value.get() - before == 2  # once per subscription that received it
        await kv.stop()
        assert feed.subscriptions == 2  # the busy router still reads "backend"
        await busy.stop()
        await remove_planner()
        assert feed.subscriptions == 0
    finally:
        await pub.close()
        await rt.close()


def test_one_subscription_feeds_every_consumer_and_counts_bad_reports(nats_server: NatsServer) -> None:
    asyncio.run(_run(nats_server.url))
