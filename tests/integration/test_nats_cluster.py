"""A three-node NATS cluster loses one node at a time (kill -9, then back): nothing is lost.

Three mock workers (greedy, deterministic tokens) and a frontend with migration on serve 32
streams; each NATS node in turn is killed mid-stream and restarted. Every stream ends with the
tokens of the same stream run without faults; JetStream keeps taking KV events while a node is
down (the stream is replicated); and a KV router started after the faults replays the same
index as one that followed the stream throughout.

Tokens are compared as the client got them: the logprobs' bytes of each token. The tiny model's
tokenizer is byte-level (id i is byte i), so equal bytes token by token are equal token ids. (A
TokenTap on NATS cannot see them all here: frames a killed node had delivered to a client on it,
but not yet forwarded to its peers, reach no listener on another node.)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import socket
import subprocess
import time
from pathlib import Path

import aiohttp
import pytest

from protocol import codec, subjects
from protocol.kv_events import KvEventBatch
from shared.cluster import local
from shared.cluster.natsd import NatsCluster, free_port
from shared.config.args import NatsOptions
from shared.routing.feed import LiveKvRouter
from shared.runtime import Runtime
from shared.runtime.publishers import ensure_kv_stream
from shared.runtime.replicas import cluster_size, while_electing
from tests.conftest import Cluster
from tests.integration.test_faults import stream_text
from tests.migration import Streamed

NS = "test"
ROOT = Path(__file__).resolve().parents[2]
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


async def assert_no_batch_lost(rt: Runtime) -> None:
    """Each worker's batches are numbered 1, 2, ...: the stream holds as many as the last one's number."""
    name = subjects.kv_events_stream(NS)
    held = (await rt.js.stream_info(name, subjects_filter=subjects.kv_events_filter(NS, "backend"))).state.subjects
    assert held and len(held) == 3, held
    for subject, count in held.items():
        last = codec.decode((await rt.js.get_last_msg(name, subject)).data or b"", KvEventBatch)
        assert (last.dp_rank, last.seq) == (0, count), f"{subject}: {count} batches stored, the last is {last.seq}"


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
        asyncio.run(scenario(cluster, nats_cluster, prompts))
        assert all(w.alive() for w in workers)
    finally:
        cluster.stop()


async def replica_1_leftovers(url: str) -> None:
    """What a single-node deployment left: the instances bucket and the KV-event stream at one replica."""
    rt = await Runtime.connect(NatsOptions(url=url, replicas=1), NS, "old")
    assert rt.replicas == 1
    kv = await rt.discovery.bucket(subjects.INSTANCES_BUCKET)
    await ensure_kv_stream(rt)
    await while_electing(lambda: kv.put(OLD_KEY, b"kept"))  # a stream just made may have no leader yet
    await while_electing(lambda: rt.js.publish(subjects.kv_events_subject(NS, "other", "0" * 16), b"old"))
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


async def scenario(cluster: Cluster, nats: NatsCluster, prompts: list[str]) -> None:
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
        want = await asyncio.gather(*(stream_text(s, cluster.url, cluster.model_name, p, N_TOKENS, logprobs=True)
                                      for p in prompts))  # the fault-free run
        assert all(len(w.tokens) == N_TOKENS for w in want)
        # 32 clients stream their prompt again and again until every node was lost once, and once more
        faults_over = asyncio.Event()
        started = [asyncio.Event() for _ in prompts]
        served: list[tuple[int, Streamed]] = []

        async def client(i: int) -> None:
            while True:
                last = faults_over.is_set()
                served.append((i, await stream_text(s, cluster.url, cluster.model_name, prompts[i], N_TOKENS,
                                                    started[i], logprobs=True)))
                if last:
                    return

        clients = [asyncio.create_task(client(i)) for i in range(len(prompts))]
        await asyncio.wait_for(asyncio.gather(*(e.wait() for e in started)), 60)
        await kill_each_node(rt, nats)
        faults_over.set()
        await asyncio.gather(*clients)

    assert len(served) >= 2 * len(prompts)
    for i, got in served:
        assert got.tokens == want[i].tokens  # every token, in order: none lost, repeated or different
        assert got.usage["completion_tokens"] == N_TOKENS

    # no registration lost: every worker's instance record and model card is there, the frontend lists all three
    # (the last node back may have taken the cluster's meta leader with it: reads wait for the next one)
    instances = subjects.instance_key_filter(NS, "backend", "generate")
    assert len(await while_electing(lambda: rt.discovery.snapshot(subjects.INSTANCES_BUCKET, instances))) == 3
    assert len(await while_electing(lambda: rt.discovery.snapshot(subjects.MODELS_BUCKET, f"{NS}.backend.*"))) == 3
    await asyncio.to_thread(cluster.wait_models, 3, 5)
    await assert_no_batch_lost(rt)
    late = LiveKvRouter(rt, "backend")
    await late.start()
    await until(lambda: late.batches == throughout.batches and index_of(late) == index_of(throughout), 10,
                "the late router's index equals the one that saw the faults")
    assert len(index_of(late)) == 3 and throughout.index.num_blocks > 0
    await late.stop()
    await throughout.stop()
    await rt.close()


def free_ports(n: int) -> int:
    """The first of n consecutive free loopback ports."""
    for _ in range(50):
        base = free_port()
        try:
            socks = [socket.create_server(("127.0.0.1", base + i)) for i in range(n)]
        except OSError:
            continue
        for s in socks:
            s.close()
        return base
    raise RuntimeError(f"no {n} consecutive free ports")


async def cluster_seen(url: str) -> tuple[int, int]:
    """(nodes, replicas) as a service connecting to `url` sees them."""
    rt = await Runtime.connect(NatsOptions(url=url), NS, "test")
    try:
        return cluster_size(rt.nc), rt.replicas
    finally:
        await rt.close()


def test_shoal_up_starts_a_three_node_cluster_and_down_stops_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)  # `up` keeps its state in ./.shoal
    base = free_ports(3)
    pids, url = local._start_nats(argparse.Namespace(nats_cluster=3, nats_port=base), tmp_path / "logs")
    local.PIDS.write_text(json.dumps(pids))
    try:
        assert NatsOptions(url=url).urls == [f"nats://127.0.0.1:{base + i}" for i in range(3)]
        assert asyncio.run(cluster_seen(url)) == (3, 3)
    finally:
        local.down(argparse.Namespace())
    assert sorted(pids) == ["nats0", "nats1", "nats2"] and not any(local._alive(p) for p in pids.values())


def test_deploy_scripts_start_a_three_node_cluster(tmp_path: Path, tiny_model: Path):
    base, routes, monitors = free_ports(3), free_ports(3), free_ports(3)
    env = {**os.environ, "STATE": str(tmp_path), "NATS_CLUSTER": "3", "NATS_PORT": str(base),
           "ROUTE_PORT": str(routes), "MONITOR_PORT": str(monitors)}
    check = "import asyncio, sys; from tests.integration.test_nats_cluster import cluster_seen as c; " \
            "print(*asyncio.run(c(sys.argv[1])))"
    script = f'source deploy/lib.sh "$1"; start_nats; "$PY" -c "{check}" "${{COMMON[1]}}"'
    out = subprocess.run(["bash", "-c", script, "lib", str(tiny_model)], env=env, cwd=ROOT, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.splitlines()[-1].split() == ["3", "3"]  # three nodes seen, buckets made with three replicas
