"""Lease heartbeats over a real nats-server: silence ends a lease before its KV key expires, a heartbeat
brings it back, a key with no heartbeats (an older process) lives by its puts, and a dead process's key
found by a new watcher goes after one lease, not at its backstop TTL."""

from __future__ import annotations

import asyncio
import time

from protocol import codec, subjects
from protocol.discovery import InstanceRecord
from shared.config.args import NatsOptions
from shared.runtime import EndpointClient, Runtime
from shared.runtime.discovery import KeyUpdate

NS = "hb"
KEY_FILTER = subjects.instance_key_filter(NS, "backend", "generate")


async def until(cond, timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        await asyncio.sleep(0.05)
    return cond()


async def test_silence_ends_a_lease_and_a_heartbeat_brings_it_back(nats_server):
    holder = await Runtime.connect(NatsOptions(url=nats_server.url), NS, "test", lease_ttl=1.5)
    watcher = await Runtime.connect(NatsOptions(url=nats_server.url), NS, "test", lease_ttl=1.5)
    seen: list[KeyUpdate] = []

    async def on_update(upd: KeyUpdate) -> None:
        seen.append(upd)

    follow = asyncio.create_task(watcher.discovery.follow(subjects.INSTANCES_BUCKET, KEY_FILTER, on_update))
    key = subjects.instance_key(NS, "backend", "generate", holder.instance_id)
    lease = await holder.discovery.lease(subjects.INSTANCES_BUCKET, key, b"rec", heartbeat=True)
    sender = holder.discovery.heartbeats
    try:
        assert await until(lambda: any(u.value == b"rec" for u in seen), 5)
        sender.discard(key)  # the heartbeat goes quiet; the KV key (30 s backstop) stays
        t0 = time.monotonic()
        assert await until(lambda: seen[-1].value is None, 6), "a silent lease was not reported gone"
        assert seen[-1].expired and time.monotonic() - t0 < 5
        kv = await holder.discovery.bucket(subjects.INSTANCES_BUCKET)
        assert (await kv.get(key)).value == b"rec"  # gone for the watcher before the key expired
        sender.add(key)
        assert await until(lambda: seen[-1].value == b"rec", 5), "a resumed heartbeat did not bring it back"
        await lease.revoke()  # a drain: the delete tells the watcher at once
        assert await until(lambda: seen[-1].value is None and not seen[-1].expired, 3)
    finally:
        follow.cancel()
        await asyncio.gather(follow, return_exceptions=True)
        await holder.close()
        await watcher.close()


async def test_a_lease_without_heartbeats_lives_by_its_puts(nats_server):
    """An older process refreshes its key every ttl/3 and sends no heartbeats: watchers keep it."""
    holder = await Runtime.connect(NatsOptions(url=nats_server.url), NS, "test", lease_ttl=1.5)
    watcher = await Runtime.connect(NatsOptions(url=nats_server.url), NS, "test", lease_ttl=1.5)
    client = EndpointClient(watcher, "backend", "generate", dict)
    await client.start()
    key = subjects.instance_key(NS, "backend", "generate", holder.instance_id)
    rec = codec.encode(InstanceRecord(namespace=NS, component="backend", endpoint="generate",
                                      instance_id=holder.instance_id))
    lease = await holder.discovery.lease(subjects.INSTANCES_BUCKET, key, rec)  # heartbeat=False
    try:
        await client.wait_for_instances(1, 5)
        await asyncio.sleep(3.5)  # over two lease TTLs without a heartbeat: its puts keep it
        assert holder.instance_id in client.instances
        await lease.abandon()
        assert await until(lambda: not client.instances, 6), "its KV TTL did not end it"
    finally:
        await client.stop()
        await holder.close()
        await watcher.close()


async def test_a_dead_process_key_found_at_start_goes_after_one_lease(nats_server):
    holder = await Runtime.connect(NatsOptions(url=nats_server.url), NS, "test", lease_ttl=1.5)
    key = subjects.instance_key(NS, "backend", "generate", holder.instance_id)
    rec = codec.encode(InstanceRecord(namespace=NS, component="backend", endpoint="generate",
                                      instance_id=holder.instance_id))
    lease = await holder.discovery.lease(subjects.INSTANCES_BUCKET, key, rec, heartbeat=True)
    await lease.abandon()  # it dies: its key stays in the bucket until the 30 s backstop
    watcher = await Runtime.connect(NatsOptions(url=nats_server.url), NS, "test", lease_ttl=1.5)
    client = EndpointClient(watcher, "backend", "generate", dict)
    await client.start()
    try:
        await client.wait_for_instances(1, 5)  # found in the bucket
        t0 = time.monotonic()
        assert await until(lambda: not client.instances, 6), "a dead key found at start lived to its backstop"
        assert time.monotonic() - t0 < 5
    finally:
        await client.stop()
        await holder.close()
        await watcher.close()
