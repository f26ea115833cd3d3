"""Session affinity: requests of one session go to the worker that session last used.

A caller names the session (the frontend takes it from the `x-session-id` header);
while that worker is live, among the candidates, and the session was used within
`ttl` seconds (each use refreshes it), the wrapped router is asked to choose among
that worker alone, so its own accounting (load, overlap, DP rank) stays right.
Otherwise the wrapped router chooses as usual and the session sticks to its choice:
a worker that left discovery (dead or drained) hands its sessions on this way.
Memory is bounded: sessions expire after `ttl`, the least recently used go first
past `max_sessions`, and a worker's sessions are forgotten when it leaves.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

from shared.routing.base import RouteDecision, Router
from shared.telemetry.metrics import counter

STICKS = counter("shoal_router_session_decisions_total",
                 "Requests naming a session: kept on the session's worker (sticky) or routed anew (new)", ["result"])
_STUCK, _ROUTED = STICKS.labels("sticky"), STICKS.labels("new")


class SessionAffinity(Router):
    def __init__(self, inner: Router, ttl: float, max_sessions: int = 100_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.inner = inner
        self.mode = inner.mode
        self.ttl = ttl
        self.max_sessions = max_sessions
        self._clock = clock
        self._sessions: OrderedDict[str, tuple[str, float]] = OrderedDict()  # -> (worker, last use), oldest first
        self._of_worker: dict[str, set[str]] = {}

    async def start(self) -> None:
        await self.inner.start()

    async def stop(self) -> None:
        await self.inner.stop()

    def add_instance(self, instance_id: str) -> None:
        self.inner.add_instance(instance_id)

    def set_capacity(self, instance_id: str, kv_blocks: int) -> None:
        self.inner.set_capacity(instance_id, kv_blocks)

    def remove_instance(self, instance_id: str) -> None:
        self.inner.remove_instance(instance_id)
        for session in self._of_worker.pop(instance_id, ()):
            del self._sessions[session]

    def choose(self, request_id: str, token_ids: Sequence[int], candidates: Sequence[str], lora: str = "",
               session_id: str = "") -> RouteDecision:
        if not session_id:
            return self.inner.choose(request_id, token_ids, candidates, lora)
        now = self._clock()
        self._expire(now)
        held = self._sessions.get(session_id)
        if held is not None and held[0] in candidates:
            _STUCK.inc()
            candidates = (held[0],)
        else:
            _ROUTED.inc()
        decision = self.inner.choose(request_id, token_ids, candidates, lora)
        self._stick(session_id, decision.instance_id, now)
        return decision

    async def admit(self, request_id: str, token_ids: Sequence[int], candidates: Sequence[str], lora: str = "",
                    session_id: str = "", ticket: Any = None) -> RouteDecision:
        return self.choose(request_id, token_ids, candidates, lora, session_id)

    def finished(self, request_id: str) -> None:
        self.inner.finished(request_id)

    def worker_of(self, session_id: str) -> str | None:
        """The worker a live session sticks to (None: no such session, or it expired)."""
        self._expire(self._clock())
        held = self._sessions.get(session_id)
        return held[0] if held else None

    @property
    def sessions(self) -> int:
        """How many sessions are remembered (not a __len__: a router with none must still be truthy)."""
        return len(self._sessions)

    def _stick(self, session_id: str, instance_id: str, now: float) -> None:
        old = self._sessions.pop(session_id, None)
        if old is not None and old[0] != instance_id:
            self._forget(session_id, old[0])
        self._sessions[session_id] = (instance_id, now)
        self._of_worker.setdefault(instance_id, set()).add(session_id)
        while len(self._sessions) > self.max_sessions:
            self._drop_oldest()

    def _expire(self, now: float) -> None:
        sessions = self._sessions
        while sessions and next(iter(sessions.values()))[1] + self.ttl < now:
            self._drop_oldest()

    def _drop_oldest(self) -> None:
        session, (worker, _) = self._sessions.popitem(last=False)
        self._forget(session, worker)

    def _forget(self, session_id: str, instance_id: str) -> None:
        sessions = self._of_worker.get(instance_id)
        if sessions is not None:
            sessions.discard(session_id)
            if not sessions:
                del self._of_worker[instance_id]
