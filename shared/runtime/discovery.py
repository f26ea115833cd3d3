"""Discovery in JetStream KV: records under leases, and watchers of key sets.

A lease is a per-key TTL: the owner re-puts its key every ttl/3. When the
process dies the key expires and the server writes a delete marker, so every
watcher sees the instance leave within one TTL.

A heartbeat lease (instance records, model cards) is put once with a long TTL, a backstop refreshed
every few seconds, and kept alive by the process's heartbeat on core NATS (shared.runtime.heartbeat):
`follow` reports its key gone, as an expired lease, once its heartbeats stop for one TTL.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig, StorageType
from nats.js.errors import BucketNotFoundError
from nats.js.kv import KeyValue

from protocol import subjects
from shared.runtime.heartbeat import HeartbeatSender, Liveness, backstop_ttl
from shared.runtime.replicas import ensure_replicas, while_electing
from shared.runtime.tasks import cancel_and_wait
from shared.telemetry.logging import get_logger

log = get_logger("shoal.discovery")

DEFAULT_LEASE_TTL = 3.0
# Replicated buckets: a key must outlive a leader election (4 to 10 s after a NATS node is lost),
# or the new leader expires every key whose refresh the election held up.
CLUSTER_LEASE_TTL = 15.0
REFRESH_S = 1.0  # a lease is put again at least this often (and every ttl/3 when shorter)
_DELETE_OPS = ("DEL", "PURGE")


@dataclass(frozen=True)
class KeyUpdate:
    key: str
    value: bytes | None  # None: the key was deleted or its lease expired
    expired: bool = False  # the lease ran out (the owner died), not a deliberate delete (drain)


async def open_bucket(js: JetStreamContext, bucket: str, marker_ttl: float = 2.0, replicas: int = 1) -> KeyValue:
    """Open a KV bucket, creating it (with per-key TTL support) if missing; fewer replicas are raised."""
    try:
        kv = await js.key_value(bucket)
    except BucketNotFoundError:
        pass
    else:
        await ensure_replicas(js, f"KV_{bucket}", replicas)
        return kv
    cfg = KeyValueConfig(bucket=bucket, history=1, storage=StorageType.FILE, limit_marker_ttl=marker_ttl,
                         replicas=replicas)
    try:
        return await js.create_key_value(cfg)
    except Exception:  # created concurrently by another process, or this user may not create buckets
        try:
            return await js.key_value(bucket)
        except BucketNotFoundError as e:
            raise RuntimeError(f"bucket {bucket} is missing and this NATS user may not create it: run "
                               "`python -m shared.cli setup` with the setup user") from e


REVOKE_TIMEOUT_S = 1.0  # a delete takes milliseconds when NATS is up


class Lease:
    """Keeps one key alive until revoked."""

    def __init__(self, js: JetStreamContext, kv: KeyValue, bucket: str, key: str, value: bytes,
                 ttl: float, heartbeats: HeartbeatSender | None = None) -> None:
        self.js, self.kv, self.key, self.value, self.ttl = js, kv, key, value, ttl
        self.heartbeats = heartbeats  # liveness on core NATS; the key's own TTL is then only a backstop
        self.kv_ttl = backstop_ttl(ttl) if heartbeats is not None else ttl
        self._subject = f"$KV.{bucket}.{key}"
        self._task: asyncio.Task[None] | None = None
        self._revoked = False  # ends the refresh loop even if a cancellation is swallowed on the way
        self._period = self.kv_ttl / 3 if heartbeats is not None else min(ttl / 3, REFRESH_S)

    async def grant(self) -> None:
        """The first put; while the bucket has no leader (a new replicated bucket, a NATS node lost) it waits."""
        await while_electing(lambda: self._put(timeout=min(self.ttl, 2.0)))
        if self.heartbeats is not None:
            self.heartbeats.add(self.key)
        self._task = asyncio.create_task(self._keep_alive(), name=f"lease:{self.key}")

    async def update(self, value: bytes) -> None:
        self.value = value
        await self._put()

    async def _put(self, timeout: float | None = None) -> None:
        """A put with a per-message TTL (KeyValue.put has none): expiry leaves a delete marker."""
        await self.js.publish(self._subject, self.value, timeout=timeout, msg_ttl=self.kv_ttl)

    async def _keep_alive(self) -> None:
        while not self._revoked:
            await asyncio.sleep(self._period)
            if self._revoked:
                return
            try:  # bounded by the refresh period: a put lost with a NATS node must not delay the next
                await self._put(timeout=self._period)
            except Exception as e:  # NATS down: keep trying; the key may expire meanwhile
                log.warning("lease_refresh_failed", key=self.key, error=str(e))

    async def abandon(self) -> None:
        """Stop keeping the key alive without deleting it: what a process that dies leaves behind."""
        self._revoked = True
        if self.heartbeats is not None:
            self.heartbeats.discard(self.key)
        await cancel_and_wait(self._task)
        self._task = None

    async def revoke(self) -> None:
        await self.abandon()  # stop keeping it alive, then delete it
        with contextlib.suppress(Exception):  # bounded: with NATS gone the lease's TTL removes the key anyway
            await asyncio.wait_for(self.kv.delete(self.key), REVOKE_TIMEOUT_S)


class Discovery:
    def __init__(self, nc: NATS, ttl: float = DEFAULT_LEASE_TTL, replicas: int = 1, namespace: str = "",
                 heartbeats: HeartbeatSender | None = None) -> None:
        """`namespace`: where heartbeats go (none without one); `heartbeats`: a sender shared by several
        runtimes on one connection (a simulated fleet), else this one makes its own when first needed."""
        self.nc = nc
        self.js = nc.jetstream(timeout=5.0)
        self.ttl = ttl
        self.replicas = replicas  # of the buckets it creates (shared.runtime.replicas)
        self.heartbeat_subject = subjects.heartbeat_subject(namespace) if namespace else ""
        self._heartbeats = heartbeats
        self._hb_queues: list[asyncio.Queue[tuple[str, object]]] = []  # one per `follow`
        self._hb_sub: object | None = None
        self._buckets: dict[str, KeyValue] = {}

    @property
    def heartbeats(self) -> HeartbeatSender | None:
        if self._heartbeats is None and self.heartbeat_subject:
            self._heartbeats = HeartbeatSender(self.nc, self.heartbeat_subject, self.ttl)
        return self._heartbeats

    async def bucket(self, name: str) -> KeyValue:
        kv = self._buckets.get(name)
        if kv is None:
            kv = self._buckets[name] = await while_electing(lambda: open_bucket(self.js, name, replicas=self.replicas))
        return kv

    async def lease(self, bucket: str, key: str, value: bytes, heartbeat: bool = False) -> Lease:
        """`heartbeat`: kept alive by this process's heartbeat (watchers that `follow` see it go within
        one TTL), its KV TTL only a backstop; else re-put every second (readers that only `get` it)."""
        lease = Lease(self.js, await self.bucket(bucket), bucket, key, value, self.ttl,
                      self.heartbeats if heartbeat else None)
        await lease.grant()
        return lease

    async def snapshot(self, bucket: str, key_filter: str) -> dict[str, bytes]:
        out: dict[str, bytes] = {}
        async for upd in self.watch(bucket, key_filter, initial_only=True):
            if upd.value is not None:
                out[upd.key] = upd.value
        return out

    async def follow(self, bucket: str, key_filter: str, on_update: Callable[[KeyUpdate], Awaitable[None]]) -> None:
        """`on_update` for every update of `watch`, forever: when a NATS outage breaks the watch, watch again
        (its current values come first again, so nothing missed meanwhile is lost). A key whose heartbeats
        stop (and that is not put again) is reported gone (expired) after its TTL, and back when a heartbeat
        or a put comes; one task calls `on_update`."""
        queue: asyncio.Queue[tuple[str, object]] = asyncio.Queue()
        await self._hear_heartbeats(queue)
        tasks = [asyncio.create_task(self._follow_kv(bucket, key_filter, queue), name=f"follow:{bucket}"),
                 asyncio.create_task(self._tick(queue), name=f"liveness:{bucket}")]
        live = Liveness(self.nc, self.ttl)
        values: dict[str, bytes] = {}
        silenced: set[str] = set()  # keys reported gone for silence, still in the bucket
        try:
            while True:
                kind, item = await queue.get()
                if kind == "kv":
                    assert isinstance(item, KeyUpdate)
                    if item.value is None:
                        live.forget(item.key)
                        values.pop(item.key, None)
                        if item.key in silenced:  # already reported gone
                            silenced.discard(item.key)
                            continue
                    else:  # a put is its owner alive: a silenced key is back
                        values[item.key] = item.value
                        live.seen(item.key)
                        silenced.discard(item.key)
                    await on_update(item)
                elif kind == "hb":
                    assert isinstance(item, bytes)
                    for key in live.on_heartbeat(item):
                        if key in silenced:
                            silenced.discard(key)
                            log.info("lease_heartbeat_resumed", bucket=bucket, key=key)
                            await on_update(KeyUpdate(key, values[key]))
                else:
                    for key in live.silent():
                        silenced.add(key)
                        log.info("lease_heartbeat_lost", bucket=bucket, key=key)
                        await on_update(KeyUpdate(key, None, expired=True))
        finally:
            await cancel_and_wait(*tasks)
            self._hb_queues.remove(queue)

    async def _hear_heartbeats(self, queue: asyncio.Queue[tuple[str, object]]) -> None:
        """Heartbeats into `queue`: one subscription for every `follow` of this runtime."""
        self._hb_queues.append(queue)
        if self._hb_sub is None and self.heartbeat_subject:
            async def on_heartbeat(msg: Msg) -> None:
                for q in self._hb_queues:
                    q.put_nowait(("hb", msg.data))

            self._hb_sub = await self.nc.subscribe(self.heartbeat_subject, cb=on_heartbeat)

    @staticmethod
    async def _tick(queue: asyncio.Queue[tuple[str, object]], every: float = 0.25) -> None:
        while True:
            await asyncio.sleep(every)
            queue.put_nowait(("tick", None))

    async def _follow_kv(self, bucket: str, key_filter: str, queue: asyncio.Queue[tuple[str, object]]) -> None:
        while True:
            try:
                async for upd in self.watch(bucket, key_filter):
                    queue.put_nowait(("kv", upd))
            except asyncio.CancelledError:
                raise
            except Exception as e:
                log.warning("watch_restart", bucket=bucket, key_filter=key_filter, error=str(e))
                await asyncio.sleep(0.5)

    async def watch(self, bucket: str, key_filter: str, initial_only: bool = False) -> AsyncIterator[KeyUpdate]:
        """Current values first, then every change, until a NATS outage breaks the watch (see `follow`)."""
        kv = await self.bucket(bucket)
        watcher = await kv.watch(key_filter)
        try:
            async for entry in watcher:
                if entry is None:  # end of the initial values
                    if initial_only:
                        return
                    continue
                deleted = entry.operation in _DELETE_OPS
                yield KeyUpdate(entry.key, None if deleted else entry.value, entry.operation == "PURGE")
        finally:
            with contextlib.suppress(Exception):
                await watcher.stop()
