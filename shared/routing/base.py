"""How a caller picks a worker instance. The frontend and the router service use this.

    router = make_router(mode, ...)         # shared.routing.make
    await router.start()
    decision = router.choose(request_id, token_ids, candidates)
    ... stream from decision.instance_id ...
    router.finished(request_id)             # always, also on errors

Instances come and go through `add_instance` / `remove_instance` (fed from
discovery by the owner of the router).
"""

from __future__ import annotations

import abc
import itertools
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class RouteDecision:
    instance_id: str
    overlap_blocks: int = 0  # blocks of the prompt the router expects cached there
    dp_rank: int | None = None


class Router(abc.ABC):
    mode: str = ""

    async def start(self) -> None:
        """Start background consumers (KV events, load); no-op for stateless modes."""

    async def stop(self) -> None:
        """Stop background consumers."""

    def add_instance(self, instance_id: str) -> None:
        """A worker became ready."""

    def set_capacity(self, instance_id: str, kv_blocks: int) -> None:
        """The worker's KV cache in blocks (its model card), for routers that judge load against it."""

    def remove_instance(self, instance_id: str) -> None:
        """A worker left (lease expired or drained): forget its cache and load."""

    @abc.abstractmethod
    def choose(self, request_id: str, token_ids: Sequence[int], candidates: Sequence[str],
               lora: str = "", session_id: str = "") -> RouteDecision:
        """Pick one of `candidates` (non-empty) for this request (run with LoRA adapter `lora`, if named).
        `session_id` names the caller's session: shared.routing.affinity keeps a session on its worker."""

    async def admit(self, request_id: str, token_ids: Sequence[int], candidates: Sequence[str],
                    lora: str = "", session_id: str = "", ticket: Any = None) -> RouteDecision:
        """`choose` for a new request, which may wait: a shared session's record is read or written in
        JetStream KV (shared.routing.shared_affinity), a full cluster queues it (shared.routing.admission).
        Callers that can await (the frontend, the processor, the router service) call this; `ticket`
        (shared.routing.admission.Ticket: priority, deadline, tenant) orders a queued request."""
        return self.choose(request_id, token_ids, candidates, lora, session_id)

    def choose_under_way(self, request_id: str, token_ids: Sequence[int], candidates: Sequence[str],
                         lora: str = "", session_id: str = "") -> RouteDecision:
        """`choose` for a request already streaming (a migration): admission limits never refuse it."""
        return self.choose(request_id, token_ids, candidates, lora, session_id)

    def finished(self, request_id: str) -> None:
        """The request ended (completed, failed or migrated away)."""


class RoundRobinRouter(Router):
    mode = "round-robin"

    def __init__(self) -> None:
        self._counter = itertools.count()

    def choose(self, request_id: str, token_ids: Sequence[int], candidates: Sequence[str],
               lora: str = "", session_id: str = "") -> RouteDecision:
        return RouteDecision(candidates[next(self._counter) % len(candidates)])


class RandomRouter(Router):
    mode = "random"

    def __init__(self, seed: int | None = None) -> None:
        self._rng = random.Random(seed)

    def choose(self, request_id: str, token_ids: Sequence[int], candidates: Sequence[str],
               lora: str = "", session_id: str = "") -> RouteDecision:
        return RouteDecision(self._rng.choice(candidates))
