"""Lease liveness on core NATS instead of a JetStream write per key per second.

A leased key (an instance record, a model card) is written to its KV bucket once, with a long TTL as a
backstop (`backstop_ttl`) that is refreshed rarely. What says "still alive" every second is one core
NATS message per process, `Heartbeat(ids, ttl)` on `shoal.<ns>.hb`, naming every key the process holds by
its last token (the instance id; a worker's instance record and model card share one):
no JetStream acknowledgement, no stored message, one message for the whole process however many keys
(a simulated fleet shares one sender among all its workers).

A watcher (`Liveness`, used by Discovery.follow) reports a key gone, as an expired lease, once `ttl`
seconds pass with neither a heartbeat naming it nor a put of it: a process of an older version (no
heartbeats, a put every ttl/3) lives as before, and a dead process's key that a new watcher finds in the
bucket goes one ttl later, not at its backstop. While the watcher's own connection is down, nobody's
silence counts.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

from nats.aio.client import Client as NATS

from protocol import codec
from protocol.discovery import Heartbeat
from shared.runtime.tasks import cancel_and_wait
from shared.telemetry.logging import get_logger

log = get_logger("shoal.heartbeat")

HEARTBEAT_S = 1.0  # a process names its keys at least this often (and every ttl/3 when shorter)
BACKSTOP_MIN_S = 30.0  # a heartbeat lease's KV TTL: it ends a key only when heartbeats could not


def key_id(key: str) -> str:
    """What a heartbeat names a key by: its last token."""
    return key.rpartition(".")[2]


def backstop_ttl(ttl: float) -> float:
    """The KV TTL of a key whose liveness travels in heartbeats: what removes it when no watcher does."""
    return max(BACKSTOP_MIN_S, 4 * ttl)


class HeartbeatSender:
    """One per process (or per simulated fleet): names every held key on `subject` each period."""

    def __init__(self, nc: NATS, subject: str, ttl: float) -> None:
        self.nc, self.subject, self.ttl = nc, subject, ttl
        self.period = min(ttl / 3, HEARTBEAT_S)
        self.ids: dict[str, int] = {}  # a key's last token -> how many held keys end in it
        self._task: asyncio.Task[None] | None = None

    def add(self, key: str) -> None:
        iid = key_id(key)
        self.ids[iid] = self.ids.get(iid, 0) + 1
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="heartbeat")

    def discard(self, key: str) -> None:
        iid = key_id(key)
        left = self.ids.pop(iid, 0) - 1
        if left > 0:
            self.ids[iid] = left

    async def beat(self) -> None:
        if self.ids and not self.nc.is_closed:
            with contextlib.suppress(Exception):  # NATS down: the client buffers it, or the next one goes
                await self.nc.publish(self.subject, codec.encode(Heartbeat(ids=list(self.ids), ttl=self.ttl)))

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None

    async def _run(self) -> None:
        while self.ids:
            await self.beat()
            await asyncio.sleep(self.period)


class Liveness:
    """A watcher's view of its keys' liveness: which went silent.

    Evidence that a key's owner lives is a heartbeat naming it or a put of the key itself (an older
    process re-puts every ttl/3 and sends no heartbeats; a dead one does neither). A key without evidence
    for its ttl (the heartbeat's, else the watcher's own lease ttl) is silent: so is a dead process's key
    that a watcher finds in the bucket when it starts, one ttl after.
    """

    def __init__(self, nc: NATS, ttl: float) -> None:
        self.nc = nc
        self.ttl = ttl
        self.last: dict[str, tuple[float, float]] = {}  # key -> (monotonic time of its last evidence, ttl)
        self.ttls: dict[str, float] = {}  # a key's ttl, as its heartbeats state it
        self.keys: dict[str, set[str]] = {}  # the keys the watcher holds now (present in the bucket), by id

    def seen(self, key: str) -> None:
        """The key was put (or found when the watch began)."""
        self.keys.setdefault(key_id(key), set()).add(key)
        self.last[key] = (time.monotonic(), self.ttls.get(key, self.ttl))

    def on_heartbeat(self, data: bytes) -> list[str]:
        """The keys of ours this heartbeat names (returned so a silenced one can come back)."""
        try:
            hb = codec.decode(data, Heartbeat)
        except Exception:
            return []
        now = time.monotonic()
        named = [k for iid in hb.ids for k in self.keys.get(iid, ())]
        for k in named:
            self.last[k] = (now, hb.ttl)
            self.ttls[k] = hb.ttl
        return named

    def forget(self, key: str) -> None:
        iid = key_id(key)
        keys = self.keys.get(iid)
        if keys is not None:
            keys.discard(key)
            if not keys:
                del self.keys[iid]
        self.last.pop(key, None)
        self.ttls.pop(key, None)

    def silent(self) -> list[str]:
        """Keys without evidence for longer than their ttl, each once (never while this connection is
        down: our outage, not theirs; everyone gets a fresh ttl once it is back)."""
        now = time.monotonic()
        if not self.nc.is_connected:
            self.last = {k: (now, ttl) for k, (_, ttl) in self.last.items()}
            return []
        gone = [k for k, (t, ttl) in self.last.items() if now - t > ttl]
        for k in gone:
            del self.last[k]
        return gone
