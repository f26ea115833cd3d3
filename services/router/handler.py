"""The `route` endpoint: a worker choice per request, and release when it ends."""

from __future__ import annotations

from collections.abc import AsyncIterator

from protocol.messages import RouteRequest, RouteResponse
from shared.routing.base import Router
from shared.runtime.errors import NoInstances
from shared.runtime.server import RequestContext


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
                                    session_id=req.session_id)
        yield RouteResponse(instance_id=d.instance_id, overlap_blocks=d.overlap_blocks, dp_rank=d.dp_rank)
