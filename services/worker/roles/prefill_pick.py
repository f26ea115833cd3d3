"""Which prefill worker takes a request: the router service's KV-aware choice, else round-robin.

With `--prefill-router COMPONENT` the decode worker asks that router service
(`python -m services.router --component COMPONENT --worker-component prefill`),
which indexes the prefill pool's KV events, for the prefill worker holding the
longest prefix of the prompt, weighed against its load; once the prefill is
over it tells the router, so the router's view of that worker's load is right.
Without a router, or when it does not answer within `ask_timeout`, the choice
is round-robin over the live prefill workers. A router that answers every prefill
worker is busy (its busy thresholds) is obeyed: `WorkersBusy` goes to the caller.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import Callable, Sequence

from protocol.discovery import InstanceRecord
from protocol.messages import RouteRequest, RouteResponse
from shared.routing.admission import Ticket
from shared.runtime.client import EndpointClient
from shared.runtime.errors import WorkersBusy
from shared.runtime.runtime import Runtime
from shared.telemetry.logging import get_logger

log = get_logger("shoal.disagg")


class PrefillPicker:
    def __init__(self, prefill: EndpointClient, router: EndpointClient[RouteResponse] | None = None,
                 eligible: Callable[[InstanceRecord], bool] = lambda _: True, ask_timeout: float = 0.5) -> None:
        self.prefill = prefill
        self.router = router
        self.eligible = eligible
        self.ask_timeout = ask_timeout
        self._rr = itertools.count()
        self._tasks: set[asyncio.Task[None]] = set()

    @classmethod
    async def start(cls, rt: Runtime, prefill: EndpointClient, router_component: str,
                    eligible: Callable[[InstanceRecord], bool] = lambda _: True) -> PrefillPicker:
        router = None
        if router_component:
            router = EndpointClient(rt, router_component, "route", RouteResponse)
            await router.start()
        return cls(prefill, router, eligible)

    async def stop(self) -> None:
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.router is not None:
            await self.router.stop()

    def live(self, tried: Sequence[str] = ()) -> list[str]:
        return sorted(i for i, rec in self.prefill.instances.items() if i not in tried and self.eligible(rec))

    async def pick(self, key: str, token_ids: Sequence[int], tried: Sequence[str] = (), lora: str = "",
                   session_id: str = "", ticket: Ticket | None = None) -> str | None:
        """A live prefill instance not in `tried` for the request `key`, or None when there is none
        (`session_id`: the client's session, which the router service keeps on one prefill worker;
        `ticket`: the request's priority, tenant and deadline, for the router service's admission queue)."""
        live = self.live(tried)
        if not live:
            return None
        if self.router is not None and self.router.instances:
            t = ticket or Ticket()
            chosen = await self._ask(RouteRequest(key, list(token_ids), exclude=list(tried), lora=lora,
                                                  session_id=session_id, priority=t.priority, tenant=t.tenant,
                                                  deadline=t.deadline))
            if chosen in live:
                return chosen
        return live[next(self._rr) % len(live)]

    def finished(self, key: str) -> None:
        """The prefill for `key` is over (either way): the router stops counting it as load."""
        if self.router is None or not self.router.instances:
            return
        task = asyncio.create_task(self._ask(RouteRequest(key, finished=True)))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _ask(self, req: RouteRequest) -> str | None:
        assert self.router is not None
        try:
            async with asyncio.timeout(self.ask_timeout), \
                    contextlib.aclosing(self.router.generate(req, req.request_id)) as answers:
                async for items in answers:
                    return items[0].instance_id or None
        except WorkersBusy:
            raise  # the pool is full: the client gets 503 with Retry-After, not an overloaded worker
        except Exception as e:  # no router, slow router, router error: round-robin instead
            log.warning("prefill_router_unavailable", request_id=req.request_id, error=repr(e)[:200])
        return None
