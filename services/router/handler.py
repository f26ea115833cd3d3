"""The `route` endpoint: a worker choice per request, and release when it ends.

A request's priority, tenant and deadline go to the router's admission queue (shared.routing.admission)
when it has one. The caller (a decode worker picking a prefill worker) has admitted the request already:
a deadline that passed on the way still lets it take a free worker, but it does not wait in the queue
past one pump tick.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

from protocol.messages import RouteRequest, RouteResponse
from shared.routing.admission import PUMP_S, Ticket
from shared.routing.base import Router
from shared.runtime.errors import NoInstances
from shared.runtime.server import RequestContext


def ticket_of_route(req: RouteRequest) -> Ticket:
    """The admission ticket of a route request (a deadline already past: at most one pump tick of waiting)."""
    deadline = max(req.deadline, time.time() + PUMP_S) if req.deadline > 0 else 0.0
    return Ticket(req.priority, deadline, req.tenant)


class RouteHandler:
    def __init__(self, router: Router, live: set[str]) -> None:
        self.router = router
        self.live = live

    async def __call__(self, req: RouteRequest, ctx: RequestContext) -> AsyncIterator[RouteResponse]:
        if req.finished:
            self.router.finished(req.request_id)
            yield RouteResponse(instance_id="")
            return
        candidates = sorted(self.live - set(req.exclude))
        if not candidates:
            raise NoInstances("no worker of the routed component is live", retry_after=1.0)
        d = await self.router.admit(req.request_id, req.token_ids, candidates, lora=req.lora,
                                    session_id=req.session_id, ticket=ticket_of_route(req))
        yield RouteResponse(instance_id=d.instance_id, overlap_blocks=d.overlap_blocks, dp_rank=d.dp_rank)
