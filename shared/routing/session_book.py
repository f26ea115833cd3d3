"""The session -> worker records every frontend, processor and router service shares (JetStream KV).

Bucket SESSIONS_BUCKET, one key per session (protocol.subjects.session_key), value
protocol.sessions.SessionRecord. Each write carries a per-message TTL of the affinity TTL, so a
session unused for that long disappears from the bucket (the server leaves a delete marker that every
watcher sees). The book keeps a local mirror (its watch) in front of the bucket: a turn of a known
session costs no round trip. Changing a session's worker is a compare-and-set on the key's revision:
of two routers moving the same session at once, one wins and the other adopts its choice, so a
session whose worker died moves once, for everyone. A record that does not decode is ignored and
counted in `shoal_router_session_records_malformed_total`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgspec
from nats.js.api import Header
from nats.js.errors import APIError, KeyNotFoundError

from protocol import codec, subjects
from protocol.sessions import SessionRecord
from shared.runtime.runtime import Runtime
from shared.runtime.tasks import cancel_and_wait
from shared.telemetry.logging import get_logger
from shared.telemetry.metrics import counter

log = get_logger("shoal.routing.sessions")
MALFORMED = counter("shoal_router_session_records_malformed_total",
                    "Session affinity records in the bucket that did not decode (ignored)", [])
CONFLICTS = counter("shoal_router_session_conflicts_total",
                    "Session writes that lost a compare-and-set to another router (its choice was adopted)", [])
WRITE_ERRORS = counter("shoal_router_session_write_errors_total", "Session writes that failed (NATS)", [])
_WRONG_LAST = (10071, 10164)  # JetStream: wrong last sequence for the subject
_DELETES = ("DEL", "PURGE")


@dataclass(frozen=True)
class Held:
    worker: str
    revision: int  # of the key in the bucket (0: written locally only, not yet confirmed)
    moves: int = 0
    written: float = 0.0  # monotonic time of the write this record came from (as seen here)


class SessionBook:
    """The bucket's sessions of one component, mirrored locally; `max_sessions` bounds the mirror."""

    def __init__(self, rt: Runtime, component: str, ttl: float, max_sessions: int = 1_000_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.rt = rt
        self.component = component
        self.ttl = ttl
        self.max_sessions = max_sessions
        self._clock = clock
        self._mirror: OrderedDict[str, Held] = OrderedDict()
        self._kv: Any = None
        self._watch: asyncio.Task[None] | None = None
        self._writes: set[asyncio.Task[Any]] = set()

    def key(self, session_id: str) -> str:
        return subjects.session_key(self.rt.namespace, self.component, session_id)

    async def start(self) -> None:
        try:
            self._kv = await asyncio.wait_for(self.rt.discovery.bucket(subjects.SESSIONS_BUCKET), 10.0)
        except Exception as e:  # no permission or no JetStream: sessions stay per process rather than none
            log.warning("sessions_bucket_unavailable", error=str(e)[:200], fallback="this process only")
            return
        ready = asyncio.Event()
        self._watch = asyncio.create_task(self._follow(ready), name=f"sessions:{self.component}")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(ready.wait(), 10.0)

    async def stop(self) -> None:
        await cancel_and_wait(self._watch)
        for t in list(self._writes):
            await cancel_and_wait(t)

    # ---- reads --------------------------------------------------------------------------------
    def cached(self, key: str) -> Held | None:
        held = self._mirror.get(key)
        if held is not None and held.written + self.ttl < self._clock():
            return None  # its TTL ran out; the bucket's delete marker is on its way
        return held

    async def fetch(self, key: str) -> Held | None:
        """The bucket's record (a mirror miss: this router never saw the session, or forgot it)."""
        if self._kv is None:
            return None
        try:
            entry = await self._kv.get(key)
        except KeyNotFoundError:
            return None
        except Exception as e:
            WRITE_ERRORS.inc()
            log.warning("session_read_failed", error=str(e)[:200])
            return None
        return self._apply(key, entry.value, entry.revision, entry.operation)

    # ---- writes -------------------------------------------------------------------------------
    async def claim(self, key: str, worker: str, last: Held | None) -> Held | None:
        """Set the session's worker if the key is still at `last`'s revision (None: absent). The new record,
        or None when another router changed it first (then `fetch` has its choice)."""
        moves = 0 if last is None else last.moves + (last.worker != worker)
        if self._kv is None:  # the bucket could not be opened: remember it here only
            held = Held(worker, (last.revision if last else 0) + 1, moves, self._clock())
            self._remember(key, held)
            return held
        data = codec.encode(SessionRecord(worker, moves))
        headers = {Header.EXPECTED_LAST_SUBJECT_SEQUENCE.value: str(last.revision if last else 0)}
        try:
            ack = await self.rt.js.publish(f"$KV.{subjects.SESSIONS_BUCKET}.{key}", data, headers=headers,
                                           msg_ttl=self.ttl)
        except APIError as e:
            if e.err_code in _WRONG_LAST:
                CONFLICTS.inc()
                return None
            raise
        held = Held(worker, ack.seq, moves, self._clock())
        self._remember(key, held)
        return held

    async def claim_or_adopt(self, key: str, worker: str, last: Held | None) -> Held | None:
        """`claim`; on a lost race, what the winner wrote (None: NATS failed, nothing known)."""
        try:
            held = await self.claim(key, worker, last)
            if held is not None:
                return held
            current = await self.fetch(key)
            if current is None:  # it expired meanwhile (a delete marker holds its revision): claim it afresh
                return await self.claim(key, worker, await self._deleted_at(key))
            return current
        except Exception as e:
            WRITE_ERRORS.inc()
            log.warning("session_write_failed", error=str(e)[:200])
            return None

    def refresh_soon(self, key: str, held: Held) -> None:
        """Each use keeps a session alive: re-put (same worker) once a quarter of the TTL has passed."""
        if held.written + self.ttl / 4 > self._clock():
            return
        self._remember(key, Held(held.worker, held.revision, held.moves, self._clock()))  # one refresh in flight
        self.in_background(self.claim(key, held.worker, held))

    def in_background(self, coro: Any) -> None:
        async def guarded() -> None:
            try:
                await coro
            except Exception as e:
                WRITE_ERRORS.inc()
                log.warning("session_write_failed", error=str(e)[:200])
        task = asyncio.get_running_loop().create_task(guarded())
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)

    async def _deleted_at(self, key: str) -> Held | None:
        """The revision of the key's delete marker (a create after expiry must name it)."""
        if self._kv is None:
            return None
        try:
            await self._kv.get(key)
        except KeyNotFoundError as e:
            entry = getattr(e, "entry", None)
            return Held("", entry.revision) if entry is not None else None
        return None

    # ---- mirror -------------------------------------------------------------------------------
    def _remember(self, key: str, held: Held) -> None:
        old = self._mirror.get(key)
        if old is not None and old.revision > held.revision:
            return  # an older write seen late
        self._mirror[key] = held
        self._mirror.move_to_end(key)
        while len(self._mirror) > self.max_sessions:
            self._mirror.popitem(last=False)

    def _apply(self, key: str, value: bytes | None, revision: int, operation: str | None) -> Held | None:
        if operation in _DELETES or value is None:
            old = self._mirror.get(key)
            if old is not None and old.revision <= revision:
                del self._mirror[key]
            return None
        try:
            rec = codec.decode(value, SessionRecord)
            if not rec.worker:
                raise msgspec.ValidationError("no worker")
        except Exception:
            MALFORMED.inc()  # kept as a record of no worker: the next request moves it (compare-and-set)
            rec = SessionRecord("")
        held = Held(rec.worker, revision, rec.moves, self._clock())
        self._remember(key, held)
        return held

    async def _follow(self, ready: asyncio.Event) -> None:
        while True:
            try:
                watcher = await self._kv.watch(subjects.session_key_filter(self.rt.namespace, self.component))
                try:
                    async for entry in watcher:
                        if entry is None:
                            ready.set()
                            continue
                        self._apply(entry.key, entry.value, entry.revision, entry.operation)
                finally:
                    with contextlib.suppress(Exception):
                        await watcher.stop()
            except asyncio.CancelledError:
                raise
            except Exception as e:
                log.warning("watch_restart", bucket=subjects.SESSIONS_BUCKET, error=str(e)[:200])
                await asyncio.sleep(0.5)

    @property
    def sessions(self) -> int:
        return len(self._mirror)
