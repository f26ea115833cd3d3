"""Session affinity shared by every frontend, processor and router service (shared.routing.session_book).

The same contract as shared.routing.affinity (a session stays on the worker it last used while that
worker is a candidate and the session was used within the TTL), but the session -> worker map lives
in JetStream KV, so two frontends behind a load balancer send a session's turns to one worker.

`admit` (awaited by the frontend, the processor and the router service) reads the local mirror first;
a session this router has not seen is read from the bucket; a new session or a move (its worker gone
or busy) is written with compare-and-set before the request is sent, and a router that loses the race
adopts the winner's worker, so each session moves once for everyone. `choose` (synchronous: a
migration) uses the mirror and writes in the background.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from shared.routing.affinity import STICKS
from shared.routing.base import RouteDecision, Router
from shared.routing.session_book import Held, SessionBook
from shared.telemetry.metrics import counter

_STUCK, _ROUTED = STICKS.labels("sticky"), STICKS.labels("new")
MOVES = counter("shoal_router_session_moves_total",
                "Sessions moved to another worker (theirs left, was busy, or the record was unreadable)", [])
ADOPTED = counter("shoal_router_session_adopted_total",
                  "Requests sent where another router had just put their session (it won the compare-and-set)", [])


class SharedSessionAffinity(Router):
    def __init__(self, inner: Router, book: SessionBook) -> None:
        self.inner = inner
        self.book = book
        self.mode = inner.mode

    async def start(self) -> None:
        await self.book.start()
        await self.inner.start()

    async def stop(self) -> None:
        await self.inner.stop()
        await self.book.stop()

    def add_instance(self, instance_id: str) -> None:
        self.inner.add_instance(instance_id)

    def set_capacity(self, instance_id: str, kv_blocks: int) -> None:
        self.inner.set_capacity(instance_id, kv_blocks)

    def remove_instance(self, instance_id: str) -> None:
        self.inner.remove_instance(instance_id)  # its sessions move on their next request (compare-and-set)

    def finished(self, request_id: str) -> None:
        self.inner.finished(request_id)

    async def admit(self, request_id: str, token_ids: Sequence[int], candidates: Sequence[str], lora: str = "",
                    session_id: str = "", ticket: Any = None) -> RouteDecision:
        if not session_id:
            return await self.inner.admit(request_id, token_ids, candidates, lora)
        key = self.book.key(session_id)
        held = self.book.cached(key) or await self.book.fetch(key)
        if held is not None and held.worker in candidates:
            return self._stick(key, held, request_id, token_ids, lora)
        d = await self.inner.admit(request_id, token_ids, candidates, lora)
        won = await self.book.claim_or_adopt(key, d.instance_id, held)
        _ROUTED.inc()
        if won is not None and held is not None and won.revision != held.revision and won.worker == d.instance_id:
            MOVES.inc()
        if won is not None and won.worker != d.instance_id and won.worker in candidates:
            ADOPTED.inc()  # another router moved or created it first: follow its choice
            self.inner.finished(request_id)
            return self.inner.choose(request_id, token_ids, (won.worker,), lora)
        return d

    def choose(self, request_id: str, token_ids: Sequence[int], candidates: Sequence[str], lora: str = "",
               session_id: str = "") -> RouteDecision:
        if not session_id:
            return self.inner.choose(request_id, token_ids, candidates, lora)
        key = self.book.key(session_id)
        held = self.book.cached(key)
        if held is not None and held.worker in candidates:
            return self._stick(key, held, request_id, token_ids, lora)
        _ROUTED.inc()
        d = self.inner.choose(request_id, token_ids, candidates, lora)
        self.book.in_background(self.book.claim_or_adopt(key, d.instance_id, held))
        return d

    def _stick(self, key: str, held: Held, request_id: str, token_ids: Sequence[int], lora: str) -> RouteDecision:
        _STUCK.inc()
        self.book.refresh_soon(key, held)
        return self.inner.choose(request_id, token_ids, (held.worker,), lora)

    def worker_of(self, session_id: str) -> str | None:
        held = self.book.cached(self.book.key(session_id))
        return held.worker if held else None

    @property
    def sessions(self) -> int:
        return self.book.sessions
