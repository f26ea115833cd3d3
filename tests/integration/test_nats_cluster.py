"""A three-node NATS cluster loses one node at a time (kill -9, then back): nothing is lost.

Three mock workers (greedy, deterministic tokens) and a frontend with migration on serve 32
streams; each NATS node in turn is killed mid-stream and restarted. Every stream ends with the
token ids of the same stream run without faults; JetStream keeps taking KV events while a node
is down (the stream is replicated); and a KV router started after the faults replays the same
index as one that followed the stream throughout.
"""

from __future__ import annotations

import asyncio
import random
import time
from pathlib import Path

import aiohttp
import pytest

from protocol import subjects
from shared.cluster.natsd import NatsCluster
from shared.config.args import NatsOptions
from shared.routing.feed import LiveKvRouter
from shared.runtime import Runtime
from shared.runtime.publishers import ensure_kv_stream
from tests.conftest import Cluster
from tests.integration.test_faults import stream_text
from tests.migration import Streamed
from tests.tap import ClusterTap

NS = "test"
N_TOKENS = 64
OLD_KEY = "old.key"


@pytest.fixture
def nats_cluster(tmp_path: Path):
    c = NatsCluster(tmp_path / "nats", 3, log_dir=tmp_path).start()
    try:
        yield c
    finally:
        c.stop()


def index_of(router: LiveKvRouter) -> dict:
    return {w: router.index.blocks_of(w) for w in router.index.workers()}


async def stored_events(rt: Runtime) -> int:
    """The KV-event stream's last sequence, as its leader says (-1 while it has none)."""
    try:  # a short timeout: while a leader is being elected the request gets no answer
        return (await rt.nc.jetstream(timeout=0.5).stream_info(subjects.kv_events_stream(NS))).state.last_seq
    except Exception:
        return -1


async def until(cond, timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < end, f"not within {timeout}s: {what}"
        await asyncio.sleep(0.05)


def test_losing_any_nats_node_loses_no_stream_registration_or_kv_event(nats_cluster: NatsCluster, tiny_model: Path,
                                                                        tmp_path: Path):
    cluster = Cluster(nats_cluster, tiny_model, tmp_path / "logs", NS)  # type: ignore[arg-type]
    asyncio.run(replica_1_leftovers(nats_cluster.url))
    try:
        workers = [cluster.worker("--speedup-ratio", "0.2", engine="mock", wait=False) for _ in range(3)]
        for w in workers:
            w.wait_ready(120)
        cluster.frontend("--migration-limit", "8", "--worker-silence-timeout", "2")
        cluster.wait_models(3)
        rng = random.Random(14)
        prompts = [" ".join(rng.choice(["ab", "cd", "ef", "gh"]) for _ in range(rng.randrange(2, 30)))
                   for _ in range(32)]
        with ClusterTap(nats_cluster.urls, NS) as tap:
            asyncio.run(scenario(cluster, nats_cluster, prompts, tap))
        assert all(w.alive() for w in workers)
    finally:
        cluster.stop()


async def replica_1_leftovers(url: str) -> None:
    """What a single-node deployment left: the instances bucket and the KV-event stream at one replica."""
    rt = await Runtime.connect(NatsOptions(url=url, replicas=1), NS, "old")
    assert rt.replicas == 1
    kv = await rt.discovery.bucket(subjects.INSTANCES_BUCKET)
    await kv.put(OLD_KEY, b"kept")
    await ensure_kv_stream(rt)
    await rt.js.publish(subjects.kv_events_subject(NS, "other", "0" * 16), b"old")
    await rt.close()


async def kill_each_node(rt: Runtime, nats: NatsCluster) -> None:
    """kill -9 each node in turn; JetStream keeps taking KV events without it; restart it."""
    for node in nats.nodes:
        await asyncio.to_thread(node.kill)
        if node is nats.nodes[0]:  # a process starting now connects through the other URLs it was given
            await (await Runtime.connect(NatsOptions(url=nats.url), NS, "late")).close()
        before = await stored_events(rt)
        end = time.monotonic() + 15
        while await stored_events(rt) <= before + 3:  # replicated: stored now, not when the node is back
            assert time.monotonic() < end, f"JetStream took no KV events with {node.name} down"
            await asyncio.sleep(0.1)
        await asyncio.to_thread(node.start)
        await asyncio.to_thread(node.wait_healthy)


async def scenario(cluster: Cluster, nats: NatsCluster, prompts: list[str], tap: ClusterTap) -> None:
    rt = await Runtime.connect(NatsOptions(url=nats.url), NS, "test")
    assert rt.replicas == 3
    streams = [f"KV_{subjects.INSTANCES_BUCKET}", f"KV_{subjects.MODELS_BUCKET}", f"OBJ_{subjects.ARTIFACTS_STORE}",
               subjects.kv_events_stream(NS)]
    for stream in streams:  # created with 3, or (the two made with 1 before the services came) raised to 3
        assert (await rt.js.stream_info(stream)).config.num_replicas == 3, stream
    kv = await rt.discovery.bucket(subjects.INSTANCES_BUCKET)
    assert (await kv.get(OLD_KEY)).value == b"kept"  # upgraded in place: what it held is still there
    assert (await rt.js.stream_info(subjects.kv_events_stream(NS))).state.first_seq == 1
    throughout = LiveKvRouter(rt, "backend")
    await throughout.start()

    async with aiohttp.ClientSession() as s:
        reference = await asyncio.gather(*(stream_text(s, cluster.url, cluster.model_name, p, N_TOKENS)
                                           for p in prompts))  # the fault-free run
        want = [await asyncio.to_thread(tap.tokens, r.response_id) for r in reference]
        # 32 clients stream their prompt again and again until every node was lost once, and once more
        faults_over = asyncio.Event()
        started = [asyncio.Event() for _ in prompts]
        served: list[tuple[int, Streamed]] = []

        async def client(i: int) -> None:
            while True:
                last = faults_over.is_set()
                served.append((i, await stream_text(s, cluster.url, cluster.model_name, prompts[i], N_TOKENS,
                                                    started[i])))
                if last:
                    return

        clients = [asyncio.create_task(client(i)) for i in range(len(prompts))]
        await asyncio.wait_for(asyncio.gather(*(e.wait() for e in started)), 60)
        await kill_each_node(rt, nats)
        faults_over.set()
        await asyncio.gather(*clients)

    assert len(served) >= 2 * len(prompts)
    for i, got in served:
        assert await asyncio.to_thread(tap.tokens, got.response_id) == want[i]
        assert got.usage["completion_tokens"] == N_TOKENS

    late = LiveKvRouter(rt, "backend")
    await late.start()
    await until(lambda: late.batches == throughout.batches and index_of(late) == index_of(throughout), 10,
                "the late router's index equals the one that saw the faults")
    assert len(index_of(late)) == 3 and throughout.index.num_blocks > 0
    await late.stop()
    await throughout.stop()
    await rt.close()
