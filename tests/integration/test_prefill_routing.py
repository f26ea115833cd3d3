"""The decode worker asks the router service which prefill worker holds a prompt's prefix.

Two prefill workers, the router service over the prefill pool (`--component prefill-router
--worker-component prefill`), a decode worker with `--prefill-router prefill-router`. Each of
three prompts is sent three times: every prompt's KV is computed once, on one prefill worker,
and the repeats find it there; round-robin would compute each prompt on both workers.
"""

from __future__ import annotations

import asyncio
import random
import time
import urllib.request

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
