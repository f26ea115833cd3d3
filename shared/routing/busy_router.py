"""Any router, minus the busy workers: the one place busy thresholds act (shared.routing.busy).

Wraps the router of any mode (round-robin, random, kv). `choose` hands the inner router only
the candidates that are not busy; when every candidate is busy it raises `WorkersBusy`
(503 with Retry-After at the frontend, the same typed error to a router service's callers)
before anything is sent, so nothing queues on a full worker. A request already streaming
that migrates (`choose_under_way`) is admitted anyway: shedding it would lose work done.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from protocol.kv_events import WorkerLoad
from shared.routing.base import RouteDecision, Router
from shared.routing.busy import BusyFilter
from shared.routing.load_feed import LoadFeed
from shared.runtime.errors import WorkersBusy
from shared.runtime.runtime import Runtime
from shared.telemetry.metrics import counter

REJECTED = counter("shoal_router_busy_rejections_total", "Requests refused because every worker was busy", [])
RETRY_AFTER_S = 1.0


class BusyRouter(Router):
    """`inner` choosing among the workers `busy` does not hold busy; load reports from `runtime` when given."""

    def __init__(self, inner: Router, busy: BusyFilter, runtime: Runtime | None = None,
                 component: str = "backend") -> None:
        self.inner = inner
        self.busy = busy
        self.mode = inner.mode
        self.rt = runtime
        self.component = component
        self._unsubscribe: Callable[[], Awaitable[None]] | None = None
        self.on_load: Callable[[], None] | None = None  # told after each report applied (the admission queue)
        self._live: set[str] = set()  # reports of other workers (other models on the component) are ignored

    async def start(self) -> None:
        await self.inner.start()
        if self.rt is not None:
            self._unsubscribe = await LoadFeed.of(self.rt).add(self.component, self.apply_load)

    async def stop(self) -> None:
        if self._unsubscribe is not None:
            await self._unsubscribe()
            self._unsubscribe = None
        await self.inner.stop()

    def apply_load(self, load: WorkerLoad) -> None:
        """One worker's report (from the process's LoadFeed); other models' workers are ignored."""
        if load.worker_id in self._live:
            self.busy.apply_load(load)
            if self.on_load is not None:
                self.on_load()

    def add_instance(self, instance_id: str) -> None:
        self._live.add(instance_id)
        self.inner.add_instance(instance_id)

    def set_capacity(self, instance_id: str, kv_blocks: int) -> None:
        self.inner.set_capacity(instance_id, kv_blocks)
        self.busy.set_capacity(instance_id, kv_blocks)

    def remove_instance(self, instance_id: str) -> None:
        self._live.discard(instance_id)
        self.inner.remove_instance(instance_id)
        self.busy.remove(instance_id)

    def choose(self, request_id: str, token_ids: Sequence[int], candidates: Sequence[str],
               lora: str = "", session_id: str = "") -> RouteDecision:
        free = self.busy.free(candidates)
        if not free:
            REJECTED.inc()
            raise WorkersBusy(f"all {len(candidates)} workers are busy (KV cache or prefill queue past its "
                              "threshold); retry later", retry_after=RETRY_AFTER_S)
        return self._send(request_id, token_ids, free, lora, session_id)

    async def admit(self, request_id: str, token_ids: Sequence[int], candidates: Sequence[str],
                    lora: str = "", session_id: str = "", ticket: Any = None) -> RouteDecision:
        free = self.busy.free(candidates)
        if not free:
            REJECTED.inc()
            raise WorkersBusy(f"all {len(candidates)} workers are busy (KV cache or prefill queue past its "
                              "threshold); retry later", retry_after=RETRY_AFTER_S)
        d = await self.inner.admit(request_id, token_ids, free, lora, session_id)
        self.busy.sent(request_id, d.instance_id, len(token_ids))
        return d

    def choose_under_way(self, request_id: str, token_ids: Sequence[int], candidates: Sequence[str],
                         lora: str = "", session_id: str = "") -> RouteDecision:
        """A migration goes to a free worker if there is one, else to a busy one: it is never refused."""
        return self._send(request_id, token_ids, self.busy.free(candidates) or candidates, lora, session_id)

    def _send(self, request_id: str, token_ids: Sequence[int], candidates: Sequence[str], lora: str,
              session_id: str) -> RouteDecision:
        d = self.inner.choose(request_id, token_ids, candidates, lora, session_id)
        self.busy.sent(request_id, d.instance_id, len(token_ids))
        return d

    def finished(self, request_id: str) -> None:
        self.inner.finished(request_id)
        self.busy.finished(request_id)
