"""Admission through the router service and from the body: a RouteRequest's priority, tenant and deadline
reach the router service's queue (a decode worker's prefill pick sends them; an older sender's message
still decodes, as the default class), and a request body's `timeout` is a queue deadline (a bad one: 400)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import msgspec
import pytest

from protocol import codec
from protocol.discovery import ModelCard
from protocol.messages import EngineRequest, OutputChunk, RouteRequest, RouteResponse, RoutingHints, Usage
from services.frontend.admission_hook import with_admission
from services.frontend.app import FrontendApp, FrontendOptions
from services.frontend.dispatch import Dispatcher
from services.frontend.models import ModelEntry
from services.router.handler import RouteHandler, ticket_of_route
from services.worker.roles.prefill_pick import PrefillPicker
from shared.errors import BadRequest
from shared.http import Request, StreamingResponse
from shared.routing import RoundRobinRouter
from shared.routing.admission import PUMP_S, AdmissionQueue, Ticket
from shared.routing.base import RouteDecision
from shared.routing.busy import BusyFilter
from shared.routing.busy_router import BusyRouter
from shared.tokenizer import Tokenizer

A = "a" * 16
PROMPT = list(range(80))  # 5 blocks of 16: one request makes the 8-block worker (threshold 0.5) busy


class Recorder(RoundRobinRouter):
    def __init__(self) -> None:
        super().__init__()
        self.tickets: list[Any] = []

    async def admit(self, request_id: str, token_ids: Any, candidates: Any, lora: str = "", session_id: str = "",
                    ticket: Any = None) -> RouteDecision:
        self.tickets.append(ticket)
        return self.choose(request_id, token_ids, candidates, lora, session_id)


async def _route(handler: RouteHandler, req: RouteRequest) -> str:
    async for resp in handler(req, None):  # type: ignore[arg-type]
        return resp.instance_id
    raise AssertionError("no answer")


async def test_the_router_service_hands_priority_tenant_and_deadline_to_admission():
    r = Recorder()
    handler = RouteHandler(r, {A})
    soon = time.time() + 30
    await _route(handler, RouteRequest("r1", PROMPT, priority=5, tenant="blue", deadline=soon))
    assert r.tickets[-1] == Ticket(priority=5, deadline=soon, tenant="blue")
    # an older sender: no such fields in the message; they decode as the default class
    old = codec.decode(msgspec.msgpack.encode({"request_id": "r2", "token_ids": [1, 2, 3]}), RouteRequest)
    await _route(handler, old)
    assert r.tickets[-1] == Ticket()
    assert b"priority" not in codec.encode(RouteRequest("r3", [1]))  # and a default one sends none of them
    # the caller admitted it already: a deadline passed on the way still lets it through, waiting one tick at most
    t = ticket_of_route(RouteRequest("r4", PROMPT, deadline=time.time() - 5))
    assert time.time() < t.deadline <= time.time() + PUMP_S


async def test_the_router_service_queue_admits_the_higher_priority_first():
    q = AdmissionQueue(BusyRouter(RoundRobinRouter(), BusyFilter(16, kv_fraction=0.5)), 8)
    q.add_instance(A)
    q.set_capacity(A, 8)
    handler = RouteHandler(q, {A})
    await _route(handler, RouteRequest("first", PROMPT))
    order: list[str] = []

    async def one(req: RouteRequest) -> None:
        await _route(handler, req)
        order.append(req.request_id)

    low = asyncio.create_task(one(RouteRequest("low", PROMPT, priority=0)))
    await asyncio.sleep(0.01)
    high = asyncio.create_task(one(RouteRequest("high", PROMPT, priority=5, tenant="blue")))
    await asyncio.sleep(0.01)
    assert q.waiting == 2 and not order
    await _route(handler, RouteRequest("first", finished=True))
    for _ in range(100):
        await asyncio.sleep(0)
    assert order == ["high"]  # it came second, and went first; low waits for it to finish
    await _route(handler, RouteRequest("high", finished=True))
    await asyncio.wait_for(asyncio.gather(low, high), 5)
    assert order == ["high", "low"]


async def test_a_decode_worker_sends_its_requests_ticket_to_the_prefill_router():
    class Router:
        instances = {"r" * 16: object()}

        def __init__(self) -> None:
            self.asked: list[RouteRequest] = []

        async def generate(self, req: RouteRequest, request_id: str) -> AsyncIterator[list[RouteResponse]]:
            self.asked.append(req)
            yield [RouteResponse(instance_id=A)]

    router = Router()
    picker = PrefillPicker(SimpleNamespace(instances={A: object()}), router)  # type: ignore[arg-type]
    assert await picker.pick("k", PROMPT, ticket=Ticket(priority=2, deadline=123.0, tenant="blue")) == A
    sent = router.asked[-1]
    assert (sent.priority, sent.tenant, sent.deadline) == (2, "blue", 123.0)
    assert await picker.pick("k2", PROMPT) == A  # no ticket: the default class
    assert (router.asked[-1].priority, router.asked[-1].tenant, router.asked[-1].deadline) == (0, "", 0.0)


def test_a_body_timeout_is_a_queue_deadline_and_the_earliest_deadline_wins():
    req = EngineRequest(request_id="r", token_ids=[1], routing=RoutingHints())
    t0 = time.time()
    d = with_admission(req, {}, "", 30.0).routing.deadline
    assert t0 + 30 <= d <= time.time() + 30
    assert with_admission(req, {"x-request-timeout": "5"}, "", 30.0).routing.deadline <= time.time() + 5
    assert with_admission(req, {"x-request-timeout": "60"}, "", 2).routing.deadline <= time.time() + 2
    assert with_admission(req, {}, "", None) is req
    for bad in (0.0, -1.0, float("inf"), float("nan")):
        with pytest.raises(BadRequest) as e:
            with_admission(req, {}, "", bad)
        assert e.value.param == "timeout" and "timeout" in str(e.value)


class Worker:
    def __init__(self) -> None:
        self.instances = {"i1": SimpleNamespace(healthy=True)}
        self.seen: list[EngineRequest] = []

    async def generate(self, request: Any, request_id: str, **kw: Any) -> AsyncIterator[list[OutputChunk]]:
        self.seen.append(request)
        yield [OutputChunk(token_ids=[33], finish_reason="length", usage=Usage(3, 1, 0))]


async def _post(app: FrontendApp, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    resp = await app(Request("POST", "/v1/chat/completions", "", {"content-type": "application/json"},
                             json.dumps(body).encode(), None))
    data = b"".join([c async for c in resp.chunks]) if isinstance(resp, StreamingResponse) else resp.body
    return resp.status, msgspec.json.decode(data)


async def test_the_frontend_reads_the_body_timeout_and_refuses_a_bad_one(tiny_model: Path):
    worker = Worker()
    m = ModelEntry("chat", Tokenizer.from_dir(tiny_model), worker, RoundRobinRouter())  # type: ignore[arg-type]
    m.cards["i1"] = ModelCard(name="chat", instance_id="i1", component="backend", context_length=64)
    registry = SimpleNamespace(models={"chat": m}, serving=lambda: [m], get=lambda name: m if name == "chat" else None)
    app = FrontendApp(registry, Dispatcher(), FrontendOptions())  # type: ignore[arg-type]
    body = {"model": "chat", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}
    t0 = time.time()
    status, _ = await _post(app, {**body, "timeout": 20})
    assert status == 200 and t0 + 20 <= worker.seen[-1].routing.deadline <= time.time() + 20
    status, _ = await _post(app, body)
    assert status == 200 and worker.seen[-1].routing.deadline == 0.0
    for bad in (0, -3, "soon", True):
        status, out = await _post(app, {**body, "timeout": bad})
        assert status == 400 and "timeout" in out["error"]["message"], (bad, out)
    assert len(worker.seen) == 2  # refused before any worker was asked
