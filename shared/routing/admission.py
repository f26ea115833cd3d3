"""Admission queue: when every worker is busy, requests wait in a bounded queue instead of a 503 at once.

Wraps the busy router (shared.routing.busy_router). `admit` tries it; when it refuses (every candidate
busy), the request waits here until a worker frees, its deadline passes, or a better request sheds it.

    order       priority (larger first), then the tenant furthest below its fair share, then the
                earliest deadline, then arrival
    fair share  each tenant's admissions count against it divided by its weight (`--router-tenant-weights`;
                a tenant not named there, or none, has weight 1: the default class); a tenant that
                starts waiting joins at the least count of those waiting, so idling earns no credit
    rate limit  `--router-tenant-rate R`: at most R requests a second per tenant (bursts of R): 429
    full        the queue holds `--router-queue-size` requests; a newcomer that ranks above the worst
                one waiting (lower priority first, then the tenant most over its share counting what it
                has waiting, then the latest deadline, the newest) takes its place (that one gets 503),
                else the newcomer gets 503; both with Retry-After
    reserve     `--router-priority-reserve F`: requests of priority <= 0 are admitted only while a worker's KV
                use is under (1 - F) x its busy threshold; the rest is kept for higher classes, so they
                rarely wait for a slot
    deadline    a deadline already past: 400; one passing while queued: 503 (`shoal_router_queue_shed_total`
                by reason)

Requests leave the queue one at a time (the next is let go only when the one before was admitted or
refused), whenever a request finishes or a load report arrives, and at least every 50 ms.
Queue wait is in `shoal_router_queue_wait_seconds` (by priority class and outcome).
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from protocol.messages import EngineRequest, ErrorCode
from shared.errors import ShoalError
from shared.routing.base import RouteDecision, Router
from shared.routing.busy_router import BusyRouter
from shared.runtime.errors import WorkersBusy
from shared.telemetry.metrics import counter, gauge, histogram

WAIT = histogram("shoal_router_queue_wait_seconds", "Time requests waited in the admission queue",
                 ["priority", "result"], buckets=(0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30))
DEPTH = gauge("shoal_router_queue_depth", "Requests waiting in the admission queue", [])
SHED = counter("shoal_router_queue_shed_total", "Requests refused by the admission queue", ["reason"])
PUMP_S = 0.05


class RateLimited(ShoalError):
    code = ErrorCode.OVERLOADED


class DeadlinePassed(ShoalError):
    code = ErrorCode.BAD_REQUEST


@dataclass(frozen=True)
class Ticket:
    """What admission knows of a request: its class, its deadline (unix seconds, 0: none), its tenant."""

    priority: int = 0
    deadline: float = 0.0
    tenant: str = ""


def ticket_of(request: EngineRequest) -> Ticket:
    """The admission ticket of an engine request (the frontend fills `routing.tenant` and `routing.deadline`)."""
    return Ticket(request.priority or 0, request.routing.deadline, request.routing.tenant)


def parse_weights(text: str) -> dict[str, float]:
    """`--router-tenant-weights a=4,b=1` -> {"a": 4.0, "b": 1.0}."""
    out: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, value = part.partition("=")
        try:
            weight = float(value)
        except ValueError:
            weight = 0.0
        if not sep or not name or weight <= 0:
            raise ValueError(f"--router-tenant-weights takes name=weight pairs (weight > 0), not {part!r}")
        out[name] = weight
    return out


@dataclass
class _Waiter:
    ticket: Ticket
    seq: int
    since: float
    go: asyncio.Future[None] = field(repr=False)

    def deadline(self) -> float:
        return self.ticket.deadline or float("inf")


class _Bucket:
    def __init__(self, rate: float, now: float) -> None:
        self.tokens, self.at, self.rate = rate, now, rate

    def take(self, now: float) -> float:
        """0 when a request may go now, else the seconds until one may."""
        self.tokens = min(self.rate, self.tokens + (now - self.at) * self.rate)
        self.at = now
        if self.tokens >= 1:
            self.tokens -= 1
            return 0.0
        return (1 - self.tokens) / self.rate


class AdmissionQueue(Router):
    def __init__(self, inner: BusyRouter, size: int, weights: dict[str, float] | None = None,
                 tenant_rate: float = 0.0, reserve: float = 0.0, retry_after: float = 1.0,
                 clock: Callable[[], float] = time.time) -> None:
        if size < 0:
            raise ValueError(f"--router-queue-size must be >= 0, not {size}")
        if not 0 <= reserve < 1:
            raise ValueError(f"--router-priority-reserve is a fraction in [0, 1), not {reserve}")
        self.reserve = reserve
        self.inner = inner
        self.mode = inner.mode
        self.size = size
        self.weights = weights or {}
        self.tenant_rate = tenant_rate
        self.retry_after = retry_after
        self._clock = clock
        self._waiting: list[_Waiter] = []
        self._seq = itertools.count()
        self._served: dict[str, float] = {}  # tenant -> admissions / weight
        self._buckets: dict[str, _Bucket] = {}
        self._granted: _Waiter | None = None  # let go, not yet admitted or refused
        self._ticker: asyncio.Task[None] | None = None
        inner.on_load = self._pump

    # ---- plumbing -----------------------------------------------------------------------------
    async def start(self) -> None:
        await self.inner.start()

    async def stop(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
        for w in self._waiting:
            if not w.go.done():
                w.go.set_exception(WorkersBusy("the router is stopping", retry_after=self.retry_after))
        self._waiting.clear()
        await self.inner.stop()

    def add_instance(self, instance_id: str) -> None:
        self.inner.add_instance(instance_id)
        self._pump()

    def set_capacity(self, instance_id: str, kv_blocks: int) -> None:
        self.inner.set_capacity(instance_id, kv_blocks)

    def remove_instance(self, instance_id: str) -> None:
        self.inner.remove_instance(instance_id)

    def finished(self, request_id: str) -> None:
        self.inner.finished(request_id)
        self._pump()

    def choose(self, request_id: str, token_ids: Sequence[int], candidates: Sequence[str], lora: str = "",
               session_id: str = "") -> RouteDecision:
        return self.inner.choose(request_id, token_ids, candidates, lora, session_id)

    def choose_under_way(self, request_id: str, token_ids: Sequence[int], candidates: Sequence[str],
                         lora: str = "", session_id: str = "") -> RouteDecision:
        return self.inner.choose_under_way(request_id, token_ids, candidates, lora, session_id)

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    # ---- admission ----------------------------------------------------------------------------
    async def admit(self, request_id: str, token_ids: Sequence[int], candidates: Sequence[str], lora: str = "",
                    session_id: str = "", ticket: Ticket | None = None) -> RouteDecision:
        t = ticket or Ticket()
        now = self._clock()
        if t.deadline and t.deadline <= now:
            SHED.labels("deadline_past").inc()
            raise DeadlinePassed(f"the request's deadline passed {now - t.deadline:.3f} s before it arrived")
        self._rate_limit(t.tenant, now)
        if not self._waiting and self._granted is None and self._room(t, candidates):  # nobody ahead
            try:
                d = await self.inner.admit(request_id, token_ids, candidates, lora, session_id)
            except WorkersBusy:
                if self.size == 0:
                    raise
            else:
                self._count(t.tenant)
                return d
        w = _Waiter(t, next(self._seq), now, asyncio.get_running_loop().create_future())
        self._enqueue(w)
        try:
            while True:
                await self._wait(w)
                try:
                    d = await self.inner.admit(request_id, token_ids, self._roomy(t, candidates), lora, session_id)
                except WorkersBusy:  # another router took the slot first: back to the head of its class
                    self._release(w)
                    w.go = asyncio.get_running_loop().create_future()
                    self._waiting.append(w)
                    DEPTH.set(len(self._waiting))
                    continue
                self._count(t.tenant)
                WAIT.labels(str(t.priority), "admitted").observe(self._clock() - w.since)
                return d
        finally:
            self._release(w)

    def _roomy(self, t: Ticket, candidates: Sequence[str]) -> Sequence[str]:
        """The candidates with room for this request's class: past the reserve, only priority > 0 goes."""
        if t.priority > 0 or self.reserve <= 0 or self.inner.busy.kv_fraction is None:
            return candidates
        busy = self.inner.busy
        limit = (1 - self.reserve) * busy.kv_fraction
        roomy = [c for c in candidates if busy.kv_blocks(c) < limit * busy.capacity(c)]
        return roomy or ()

    def _room(self, t: Ticket, candidates: Sequence[str]) -> bool:
        return self.inner.busy.any_free(self._roomy(t, candidates))

    def _rate_limit(self, tenant: str, now: float) -> None:
        if self.tenant_rate <= 0:
            return
        bucket = self._buckets.get(tenant)
        if bucket is None:
            bucket = self._buckets[tenant] = _Bucket(self.tenant_rate, now)
            if len(self._buckets) > 100_000:  # bounded: forget the oldest tenant
                self._buckets.pop(next(iter(self._buckets)))
        wait = bucket.take(now)
        if wait > 0:
            SHED.labels("rate_limit").inc()
            raise RateLimited(f"tenant over its rate limit of {self.tenant_rate:g} requests/s; retry later",
                              retry_after=max(1.0, round(wait, 3)))

    def _enqueue(self, w: _Waiter) -> None:
        tenant = w.ticket.tenant
        if tenant not in {x.ticket.tenant for x in self._waiting}:  # joins at the least count of those waiting
            floor = min((self._served.get(x.ticket.tenant, 0.0) for x in self._waiting), default=None)
            if floor is not None:
                self._served[tenant] = max(self._served.get(tenant, 0.0), floor)
        if self.size == 0:
            SHED.labels("queue_full").inc()
            raise WorkersBusy("every worker is busy; retry later", retry_after=self.retry_after)
        if len(self._waiting) >= self.size:
            counts: dict[str, int] = {}
            for x in self._waiting:
                counts[x.ticket.tenant] = counts.get(x.ticket.tenant, 0) + 1
            worst = max(self._waiting, key=lambda x: self._shed_rank(x, counts))
            if self._shed_rank(worst, counts) <= self._shed_rank(w, counts, joining=True):
                SHED.labels("queue_full").inc()
                WAIT.labels(str(w.ticket.priority), "shed").observe(0)
                raise WorkersBusy(f"every worker is busy and the admission queue is full ({self.size}); "
                                  "retry later", retry_after=self.retry_after)
            self._waiting.remove(worst)
            SHED.labels("displaced").inc()
            WAIT.labels(str(worst.ticket.priority), "shed").observe(self._clock() - worst.since)
            if not worst.go.done():
                worst.go.set_exception(WorkersBusy("every worker is busy and a request of a higher class (or of a "
                                                   "tenant below its fair share) took this one's place in the "
                                                   "queue; retry later", retry_after=self.retry_after))
        self._waiting.append(w)
        DEPTH.set(len(self._waiting))
        self._ensure_ticker()
        self._pump()

    def _shed_rank(self, w: _Waiter, counts: dict[str, int], joining: bool = False
                   ) -> tuple[float, float, float, int]:
        """Larger: shed first. The lowest priority, then the tenant furthest over its fair share (admitted
        plus waiting, over its weight; `joining`: counting `w` itself), then the latest deadline, the newest."""
        t = w.ticket.tenant
        waiting = counts.get(t, 0) + joining
        usage = self._served.get(t, 0.0) + waiting / self.weights.get(t, 1.0)
        return (-w.ticket.priority, usage, w.deadline(), w.seq)

    async def _wait(self, w: _Waiter) -> None:
        left = w.ticket.deadline - self._clock() if w.ticket.deadline else None
        try:
            await asyncio.wait_for(asyncio.shield(w.go), left)
        except TimeoutError:
            if w in self._waiting:
                self._waiting.remove(w)
                DEPTH.set(len(self._waiting))
            SHED.labels("deadline").inc()
            WAIT.labels(str(w.ticket.priority), "expired").observe(self._clock() - w.since)
            raise WorkersBusy("every worker stayed busy until the request's deadline", ErrorCode.TIMEOUT,
                              retry_after=self.retry_after) from None

    def _release(self, w: _Waiter) -> None:
        if w in self._waiting:
            self._waiting.remove(w)
            DEPTH.set(len(self._waiting))
        if self._granted is w:
            self._granted = None
            self._pump()

    def _count(self, tenant: str) -> None:
        self._served[tenant] = self._served.get(tenant, 0.0) + 1.0 / self.weights.get(tenant, 1.0)
        if len(self._served) > 100_000:
            self._served.pop(next(iter(self._served)))

    def _next(self) -> _Waiter:
        served = self._served
        return min(self._waiting, key=lambda w: (-w.ticket.priority, served.get(w.ticket.tenant, 0.0),
                                                  w.deadline(), w.seq))

    def _pump(self) -> None:
        """Let the next waiter try, when none is trying and some worker is free."""
        if self._granted is not None or not self._waiting:
            return
        w = self._next()
        if not self._room(w.ticket, list(self.inner._live)):
            return
        self._waiting.remove(w)
        DEPTH.set(len(self._waiting))
        if w.go.done():
            self._pump()
            return
        self._granted = w
        w.go.set_result(None)

    def _ensure_ticker(self) -> None:
        if self._ticker is None or self._ticker.done():
            self._ticker = asyncio.get_running_loop().create_task(self._tick(), name="admission-queue")

    async def _tick(self) -> None:
        while self._waiting or self._granted is not None:
            await asyncio.sleep(PUMP_S)
            self._pump()
