"""Admission queue: busy workers queue requests by priority, tenant fair share, deadline and arrival;
bounded (shed by class with 503 + Retry-After), deadlines and per-tenant rate limits enforced."""

from __future__ import annotations

import asyncio

import pytest

from protocol.messages import HTTP_STATUS, EngineRequest, RoutingHints, StopConditions
from services.frontend.admission_hook import with_admission
from shared.errors import BadRequest
from shared.routing import RoundRobinRouter
from shared.routing.admission import AdmissionQueue, DeadlinePassed, RateLimited, Ticket, parse_weights, ticket_of
from shared.routing.busy import BusyFilter
from shared.routing.busy_router import BusyRouter
from shared.runtime.errors import WorkersBusy

A = "a" * 16
PROMPT = list(range(80))  # 5 blocks of 16: one request makes the 8-block worker (threshold 0.5) busy


def queue(size: int = 8, **kw) -> AdmissionQueue:
    busy = BusyRouter(RoundRobinRouter(), BusyFilter(16, kv_fraction=0.5))
    q = AdmissionQueue(busy, size, **kw)
    q.add_instance(A)
    q.set_capacity(A, 8)
    return q


async def drain(q: AdmissionQueue, tickets: dict[str, Ticket]) -> list[str]:
    """Fill the worker, queue every ticket, then finish requests one by one: the order they were admitted in."""
    await q.admit("first", PROMPT, [A])
    order: list[str] = []

    async def one(rid: str, t: Ticket) -> None:
        await q.admit(rid, PROMPT, [A], ticket=t)
        order.append(rid)

    tasks = []
    for rid, t in tickets.items():
        tasks.append(asyncio.create_task(one(rid, t)))
        await asyncio.sleep(0)
    await asyncio.sleep(0.01)
    assert q.waiting == len(tickets) and not order
    done = "first"
    while len(order) < len(tickets):
        q.finished(done)
        for _ in range(50):
            await asyncio.sleep(0)
        assert order, "a finished request let the next one in"
        done = order[-1]
    await asyncio.gather(*tasks)
    return order


def test_priority_first_then_deadline_then_arrival():
    async def run() -> list[str]:
        return await drain(queue(), {
            "low": Ticket(priority=0), "high-late": Ticket(priority=5, deadline=9e12),
            "high-soon": Ticket(priority=5, deadline=8e12), "high-none": Ticket(priority=5),
            "low2": Ticket(priority=0), "mid": Ticket(priority=1)})
    assert asyncio.run(run()) == ["high-soon", "high-late", "high-none", "mid", "low", "low2"]


def test_tenants_share_fairly_by_weight_and_an_unknown_tenant_gets_the_default_weight():
    async def run(weights: dict[str, float]) -> list[str]:
        tickets = {f"big{i}": Ticket(tenant="big") for i in range(6)}
        tickets.update({f"small{i}": Ticket(tenant="small") for i in range(3)})
        order = await drain(queue(size=16, weights=weights), tickets)
        return [rid.rstrip("0123456789") for rid in order]
    assert asyncio.run(run({}))[:6] == ["big", "small", "big", "small", "big", "small"]
    assert asyncio.run(run({"big": 2.0}))[:6] == ["big", "small", "big", "big", "small", "big"]


def test_a_full_queue_sheds_the_lowest_class_with_retry_after():
    async def run() -> None:
        q = queue(size=2)
        await q.admit("first", PROMPT, [A])
        low = asyncio.create_task(q.admit("low", PROMPT, [A], ticket=Ticket(priority=0)))
        mid = asyncio.create_task(q.admit("mid", PROMPT, [A], ticket=Ticket(priority=1)))
        await asyncio.sleep(0.01)
        with pytest.raises(WorkersBusy) as refused:  # not above anyone waiting: refused at once
            await q.admit("low2", PROMPT, [A], ticket=Ticket(priority=0))
        assert refused.value.retry_after and HTTP_STATUS[refused.value.code] == 503
        high = asyncio.create_task(q.admit("high", PROMPT, [A], ticket=Ticket(priority=9)))
        await asyncio.sleep(0.01)
        with pytest.raises(WorkersBusy):  # displaced by the high one
            await low
        q.finished("first")
        assert (await high).instance_id == A
        q.finished("high")
        assert (await mid).instance_id == A
    asyncio.run(run())


def test_deadlines_past_on_arrival_are_4xx_and_while_queued_5xx():
    async def run() -> None:
        q = queue()
        with pytest.raises(DeadlinePassed) as past:
            await q.admit("old", PROMPT, [A], ticket=Ticket(deadline=1.0))
        assert HTTP_STATUS[past.value.code] == 400
        await q.admit("first", PROMPT, [A])
        import time
        with pytest.raises(WorkersBusy) as expired:
            await q.admit("soon", PROMPT, [A], ticket=Ticket(deadline=time.time() + 0.05))
        assert HTTP_STATUS[expired.value.code] == 504 and q.waiting == 0
    asyncio.run(run())


def test_a_tenant_past_its_rate_gets_429_and_others_are_not_held_back():
    async def run() -> None:
        q = queue(tenant_rate=2.0)
        q.set_capacity(A, 10_000)
        await q.admit("1", PROMPT, [A], ticket=Ticket(tenant="t"))
        await q.admit("2", PROMPT, [A], ticket=Ticket(tenant="t"))
        with pytest.raises(RateLimited) as limited:
            await q.admit("3", PROMPT, [A], ticket=Ticket(tenant="t"))
        assert HTTP_STATUS[limited.value.code] == 429 and limited.value.retry_after
        await q.admit("4", PROMPT, [A], ticket=Ticket(tenant="other"))
    asyncio.run(run())


def test_the_frontend_hook_sets_tenant_and_deadline_and_refuses_a_past_deadline():
    req = EngineRequest(request_id="r", token_ids=[1], stop=StopConditions(max_tokens=1), routing=RoutingHints(),
                        priority=3)
    t = ticket_of(with_admission(req, {"x-team": "blue", "x-request-timeout": "30"}, "x-team"))
    assert t.tenant == "blue" and t.priority == 3 and t.deadline > 0
    keyed = ticket_of(with_admission(req, {"authorization": "Bearer sk-1"}))
    assert keyed.tenant.startswith("key:") and "sk-1" not in keyed.tenant
    assert ticket_of(with_admission(req, {})) == Ticket(priority=3)  # unknown tenant: the default class
    for bad in ({"x-request-deadline": "1"}, {"x-request-timeout": "-1"}, {"x-request-deadline": "soon"}):
        with pytest.raises(BadRequest):
            with_admission(req, bad)
    assert parse_weights("a=4, b=0.5") == {"a": 4.0, "b": 0.5}
    with pytest.raises(ValueError):
        parse_weights("a=0")


def test_a_full_queue_makes_room_for_a_tenant_below_its_share():
    async def run() -> None:
        q = queue(size=3)
        await q.admit("first", PROMPT, [A])
        flood = [asyncio.create_task(q.admit(f"big{i}", PROMPT, [A], ticket=Ticket(tenant="big"))) for i in range(3)]
        await asyncio.sleep(0.01)
        small = asyncio.create_task(q.admit("small", PROMPT, [A], ticket=Ticket(tenant="small")))
        await asyncio.sleep(0.01)
        with pytest.raises(WorkersBusy):
            await flood[2]  # the over-share tenant's newest gave its place up
        with pytest.raises(WorkersBusy):  # the flooding tenant cannot push back in
            await q.admit("big3", PROMPT, [A], ticket=Ticket(tenant="big"))
        q.finished("first")  # equal shares so far: the earlier arrival goes
        assert (await flood[0]).instance_id == A
        q.finished("big0")  # now "big" is ahead of its share: "small" goes before big1, which came earlier
        assert (await small).instance_id == A and not flood[1].done()
        flood[1].cancel()
    asyncio.run(run())


def test_the_priority_reserve_holds_the_last_of_the_budget_for_higher_classes():
    async def run() -> None:
        busy = BusyRouter(RoundRobinRouter(), BusyFilter(16, kv_fraction=0.5))
        q = AdmissionQueue(busy, 8, reserve=0.5)
        q.add_instance(A)
        q.set_capacity(A, 40)  # busy past 20 blocks; priority 0 only under 10
        await q.admit("low1", PROMPT, [A])  # 0 -> 5 blocks
        await q.admit("low2", PROMPT, [A])  # 5 -> 10
        low3 = asyncio.create_task(q.admit("low3", PROMPT, [A]))
        await asyncio.sleep(0.01)
        assert not low3.done() and q.waiting == 1  # 10 blocks: no room left for priority 0
        assert (await q.admit("high", PROMPT, [A], ticket=Ticket(priority=1))).instance_id == A
        q.finished("low1")
        q.finished("high")
        assert (await low3).instance_id == A
    asyncio.run(run())
