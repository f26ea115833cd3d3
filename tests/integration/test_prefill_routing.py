"""The decode worker asks the router service which prefill worker holds a prompt's prefix.

Two prefill workers, the router service over the prefill pool (`--component prefill-router
--worker-component prefill`), a decode worker with `--prefill-router prefill-router`. Each of
three prompts is sent three times: every prompt's KV is computed once, on one prefill worker,
and the repeats find it there; round-robin would compute each prompt on both workers. A router
killed mid-run costs no request, and the one started after it rebuilds the caches' index by replay.
"""

from __future__ import annotations

import asyncio
import random
import signal
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import nats

from protocol import codec, subjects
from protocol.kv_events import BlockStored, KvEventBatch
from shared.cluster.procs import spawn
from tests.integration.test_disagg import complete, decode_worker, prefill_worker, ready

PAGE = 16


async def _collect(url: str, ns: str, stored: dict[str, int], stop: asyncio.Event) -> None:
    nc = await nats.connect(url)

    async def on_msg(msg: nats.aio.msg.Msg) -> None:
        batch = codec.decode(msg.data, KvEventBatch)
        n = sum(len(e.block_hashes) for e in batch.events if isinstance(e, BlockStored))
        stored[batch.worker_id] = stored.get(batch.worker_id, 0) + n

    await nc.subscribe(subjects.kv_events_filter(ns, "prefill"), cb=on_msg)
    await stop.wait()
    await nc.drain()


def _stored_blocks(url: str, ns: str, work) -> dict[str, int]:
    """Prefill workers' stored blocks (from their KV events on NATS) while `work()` runs."""
    stored: dict[str, int] = {}

    async def run() -> None:
        stop = asyncio.Event()
        listener = asyncio.create_task(_collect(url, ns, stored, stop))
        await asyncio.sleep(0.3)
        await asyncio.to_thread(work)
        await asyncio.sleep(0.5)
        stop.set()
        await listener

    asyncio.run(run())
    return stored


def test_decode_sends_repeats_to_the_prefill_worker_holding_the_prefix(cluster):
    a, b = prefill_worker(cluster, name="prefill-a"), prefill_worker(cluster, name="prefill-b")
    router = spawn("prefill-router", "router", [*cluster.common, "--component", "prefill-router",
                                                "--worker-component", "prefill"], cluster.log_dir)
    cluster.procs.append(router)
    decode = decode_worker(cluster, "--prefill-router", "prefill-router")
    ready(cluster, a, b, router, decode)
    rng = random.Random(5)
    prompts = [[rng.randrange(3, 256) for _ in range(PAGE * 20 + 5)] for _ in range(3)]
    results = []

    def work() -> None:
        for _ in range(3):
            for p in prompts:
                results.append(complete(cluster.url, cluster.model_name, p, 2))
                time.sleep(0.3)  # the prefill worker's KV events reach the router

    stored = _stored_blocks(cluster.nats.url, cluster.namespace, work)
    assert [status for status, _ in results] == [200] * 9, results
    assert sum(stored.values()) == 3 * 20, stored  # each prompt's 20 full blocks computed once
    with urllib.request.urlopen(f"http://127.0.0.1:{router.system_port}/metrics", timeout=5) as r:
        metrics = r.read().decode()
    hits = [ln for ln in metrics.splitlines() if ln.startswith("shoal_router_hit_blocks_total")]
    assert hits and float(hits[0].split()[-1]) >= 6 * 20, hits  # the six repeats were routed to their prefix


def test_router_killed_mid_run_loses_nothing_and_its_successor_replays_the_caches(cluster):
    a, b = prefill_worker(cluster, name="prefill-a"), prefill_worker(cluster, name="prefill-b")
    router_args = [*cluster.common, "--component", "prefill-router", "--worker-component", "prefill"]
    router = spawn("prefill-router", "router", router_args, cluster.log_dir)
    cluster.procs.append(router)
    decode = decode_worker(cluster, "--prefill-router", "prefill-router")
    ready(cluster, a, b, router, decode)
    rng = random.Random(9)
    before = [[rng.randrange(3, 256) for _ in range(PAGE * 20 + 5)] for _ in range(5)]
    during = [[rng.randrange(3, 256) for _ in range(PAGE * 4 + 5)] for _ in range(16)]
    statuses: list[int] = []

    def first_phase() -> None:
        for p in before:  # each prompt's KV now sits on one prefill worker only
            statuses.append(complete(cluster.url, cluster.model_name, p, 2)[0])
        time.sleep(0.5)
        with ThreadPoolExecutor(8) as pool:
            futures = [pool.submit(complete, cluster.url, cluster.model_name, p, 2) for p in during]
            time.sleep(0.05)
            router.signal(signal.SIGKILL)  # mid-run: the decode worker falls back to round-robin
            statuses.extend(f.result(timeout=60)[0] for f in futures)

    _stored_blocks(cluster.nats.url, cluster.namespace, first_phase)
    assert statuses == [200] * (len(before) + len(during)), statuses

    successor = spawn("prefill-router-2", "router", router_args, cluster.log_dir)
    cluster.procs.append(successor)
    successor.wait_ready(60)  # ready once it has replayed the KV-event stream
    time.sleep(1.0)  # the decode worker sees the new instance

    def second_phase() -> None:
        for p in before:
            statuses.append(complete(cluster.url, cluster.model_name, p, 2)[0])

    stored = _stored_blocks(cluster.nats.url, cluster.namespace, second_phase)
    assert statuses[-len(before):] == [200] * len(before)
    assert sum(stored.values()) == 0, stored  # every repeat went to the worker that already held it
