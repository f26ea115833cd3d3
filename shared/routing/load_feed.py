"""Workers' load reports, one subscription per process: decoded once, fed to every consumer.

The KV router (shared.routing.feed), the busy filter (shared.routing.busy_router) and the planner
(services.planner.intake) each want every `WorkerLoad` of a component. They register here instead
of subscribing: the process holds one NATS subscription per component filter (a role may read only
its own components' load, deploy/nats), decodes each message once and hands the same struct to
every consumer of that component. A message that does not decode is counted in
`shoal_load_undecodable_total` and logged (once a minute at most), never dropped silently.

    feed = LoadFeed.of(runtime)
    remove = await feed.add("backend", router.apply_load)
    ...
    await remove()
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import weakref
from collections.abc import Awaitable, Callable
from typing import Any

from nats.aio.msg import Msg

from protocol import codec, subjects
from protocol.kv_events import WorkerLoad
from shared.runtime.runtime import Runtime
from shared.telemetry.logging import get_logger
from shared.telemetry.metrics import counter

log = get_logger("shoal.routing.load")
UNDECODABLE = counter("shoal_load_undecodable_total", "Worker load reports that did not decode (ignored)", [])
DECODED = counter("shoal_load_reports_total", "Worker load reports decoded (once per process)", [])
Consumer = Callable[[WorkerLoad], None]
_LOG_EVERY_S = 60.0


class LoadFeed:
    """The process's load subscriptions on one runtime (one NATS connection and namespace)."""

    _feeds: weakref.WeakKeyDictionary[Any, LoadFeed] = weakref.WeakKeyDictionary()

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self._consumers: dict[str, list[Consumer]] = {}  # component (or "*") -> consumers
        self._subs: dict[str, Any] = {}
        self._lock = asyncio.Lock()
        self._logged = 0.0

    @classmethod
    def of(cls, rt: Runtime) -> LoadFeed:
        """The one feed of this runtime."""
        feed = cls._feeds.get(rt)
        if feed is None:
            feed = cls._feeds[rt] = cls(rt)
        return feed

    async def add(self, component: str, consumer: Consumer) -> Callable[[], Awaitable[None]]:
        """Feed `consumer` every load report of `component` ("*": every component); returns its removal."""
        async with self._lock:
            self._consumers.setdefault(component, []).append(consumer)
            if component not in self._subs:
                async def on_load(msg: Msg) -> None:
                    self.deliver(component, msg.subject, msg.data)

                self._subs[component] = await self.rt.nc.subscribe(
                    subjects.load_filter(self.rt.namespace, component), cb=on_load)

        async def remove() -> None:
            await self._remove(component, consumer)
        return remove

    async def _remove(self, component: str, consumer: Consumer) -> None:
        async with self._lock:
            consumers = self._consumers.get(component, [])
            with contextlib.suppress(ValueError):
                consumers.remove(consumer)
            if consumers:
                return
            self._consumers.pop(component, None)
            sub = self._subs.pop(component, None)
            if sub is not None:
                with contextlib.suppress(Exception):
                    await sub.unsubscribe()

    @property
    def subscriptions(self) -> int:
        return len(self._subs)

    def deliver(self, component: str, subject: str, data: bytes) -> None:
        """Decode one report of the subscription for `component` (once) and hand it to that subscription's consumers."""
        try:
            load = codec.decode(data, WorkerLoad)
        except Exception as e:
            UNDECODABLE.inc()
            now = time.monotonic()
            if now - self._logged > _LOG_EVERY_S:
                self._logged = now
                log.warning("load_undecodable", subject=subject, error=str(e)[:200])
            return
        DECODED.inc()
        for consumer in tuple(self._consumers.get(component, ())):
            try:
                consumer(load)
            except Exception as e:  # one consumer's bug must not starve the others
                log.warning("load_consumer_failed", consumer=getattr(consumer, "__qualname__", "?"),
                            error=str(e)[:200])
