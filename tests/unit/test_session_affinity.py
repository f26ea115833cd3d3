"""Session affinity: a session sticks to its worker while that worker is live and the session is used within
the TTL; it moves (and sticks again) when the worker leaves; memory stays bounded."""

from __future__ import annotations

import argparse

import pytest

from protocol.kv_events import WorkerLoad
from protocol.messages import EngineRequest, OutputChunk, RouteRequest, RouteResponse, RoutingHints
from services.frontend.session import MAX_SESSION_ID, with_session
from services.processor.handler import ProcessorHandler
from services.router.handler import RouteHandler
from services.worker.roles.prefill_pick import PrefillPicker
from shared.errors import BadRequest
from shared.routing import RoundRobinRouter
from shared.routing.affinity import SessionAffinity
from shared.routing.kv_router import KvRouter
from shared.routing.options import ROUTER_FLAGS, RouterOptions
from shared.runtime.server import RequestContext

A, B, C = "a" * 16, "b" * 16, "c" * 16
WORKERS = [A, B, C]
TTL = 10.0


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def sticky(inner=None, **kw) -> tuple[SessionAffinity, Clock]:
    clock = Clock()
    r = SessionAffinity(inner or RoundRobinRouter(), TTL, clock=clock, **kw)
    for w in WORKERS:
        r.add_instance(w)
    return r, clock


def route(r: SessionAffinity, session: str, n: int = 1, candidates=WORKERS) -> list[str]:
    return [r.choose(f"{session}-{i}", [1, 2, 3], candidates, session_id=session).instance_id for i in range(n)]


def test_requests_of_a_session_stick_to_one_worker():
    r, _ = sticky()
    first = route(r, "s1", 20)
    assert len(set(first)) == 1  # round-robin alone would cycle through all three
    assert {r.choose(f"x{i}", [1], WORKERS).instance_id for i in range(3)} == set(WORKERS)  # no session: as before
    assert route(r, "s1", 5) == first[:5]


def test_sessions_spread_like_the_router_they_wrap():
    r, _ = sticky()
    assert len({route(r, f"s{i}")[0] for i in range(3)}) == 3


def test_a_session_unused_past_the_ttl_is_routed_anew():
    r, clock = sticky()
    (w,) = route(r, "s1")
    for _ in range(3):  # each use refreshes the TTL: three uses span 2.7 TTLs
        clock.now += 0.9 * TTL
        assert route(r, "s1") == [w]
    clock.now += TTL + 0.1
    assert r.worker_of("s1") is None and r.sessions == 0
    assert route(r, "s1") != [w]  # round-robin moved on: the session starts afresh


def test_a_session_moves_when_its_worker_leaves_and_sticks_to_the_new_one():
    r, _ = sticky()
    (w,) = route(r, "s1")
    route(r, "s2", candidates=[x for x in WORKERS if x != w])
    r.remove_instance(w)
    assert r.worker_of("s1") is None and r.sessions == 1  # forgotten with the worker
    live = [x for x in WORKERS if x != w]
    moved = route(r, "s1", 10, candidates=live)
    assert len(set(moved)) == 1 and moved[0] != w


def test_a_worker_not_among_the_candidates_passes_the_session_on():
    r, _ = sticky()
    (w,) = route(r, "s1")
    others = [x for x in WORKERS if x != w]
    (elsewhere,) = route(r, "s1", candidates=others)  # e.g. excluded after it answered "overloaded"
    assert elsewhere != w and route(r, "s1", 3) == [elsewhere] * 3


def test_memory_is_bounded_least_recently_used_first():
    r, _ = sticky(max_sessions=3)
    for s in ("s1", "s2", "s3"):
        route(r, s)
    route(r, "s1")  # s1 is now the most recent
    route(r, "s4")
    assert r.sessions == 3 and r.worker_of("s2") is None and r.worker_of("s1") is not None


def test_the_kv_router_counts_a_sticky_request_on_the_sticky_worker():
    kv = KvRouter(page_size=4, seed=0)
    r, _ = sticky(kv)
    prompt = list(range(32))  # 8 blocks
    (w,) = [r.choose("r0", prompt, WORKERS, session_id="s1").instance_id]
    # the session's worker is the busiest now, yet the session stays
    d = r.choose("r1", prompt, WORKERS, session_id="s1")
    assert d.instance_id == w and kv._load(w) == 16
    r.finished("r0")
    r.finished("r1")
    assert kv._load(w) == 0


def test_the_flag_wraps_every_mode_and_zero_is_off():
    p = argparse.ArgumentParser()
    ROUTER_FLAGS.add_to(p)
    opts = ROUTER_FLAGS.build(p.parse_args(["--router-session-affinity-ttl-secs", "30"]))
    assert opts.session_ttl == 30.0
    for mode in ("round-robin", "random", "kv", "direct"):
        router = RouterOptions(mode=mode, session_ttl=30.0).make()
        assert isinstance(router, SessionAffinity) and router.ttl == 30.0
    assert not isinstance(RouterOptions(mode="kv").make(), SessionAffinity)


async def test_the_router_service_keeps_a_session_on_its_worker():
    r, _ = sticky()
    handler = RouteHandler(r, set(WORKERS))

    async def ask(i: int) -> str:
        async for resp in handler(RouteRequest(f"p{i}", [1, 2], session_id="s1"), None):
            return resp.instance_id
        raise AssertionError("no answer")

    assert len({await ask(i) for i in range(6)}) == 1


def test_the_frontend_puts_the_header_on_the_request():
    req = EngineRequest("r1", [1, 2])
    assert with_session(req, None) is req and with_session(req, "") is req
    assert with_session(req, "chat-42").routing.session_id == "chat-42"
    with pytest.raises(BadRequest):
        with_session(req, "x" * (MAX_SESSION_ID + 1))


class FakeWorkers:
    """The processor's client of the LLM workers (or the prefill pool, or the router service)."""

    def __init__(self, answer: object = None) -> None:
        self.instances = dict.fromkeys(WORKERS)
        self.answer = answer
        self.calls: list[tuple[object, str | None]] = []

    def add_listener(self, listener) -> None:
        pass

    def instance_ids(self) -> list[str]:
        return list(WORKERS)

    async def generate(self, request, request_id: str, instance_id: str | None = None, **kw):
        self.calls.append((request, instance_id))
        yield [self.answer or OutputChunk(token_ids=[7], finish_reason="stop")]


async def test_the_processor_keeps_a_session_on_its_worker():
    workers = FakeWorkers()
    handler = ProcessorHandler(FakeWorkers(), workers, 0, sticky()[0])  # type: ignore[arg-type]
    for i in range(6):
        req = EngineRequest(f"r{i}", [1, 2], routing=RoutingHints(session_id="s1"))
        async for _ in handler(req, RequestContext(f"r{i}", "p" * 16, {})):
            pass
    assert len({target for _, target in workers.calls}) == 1


async def test_the_decode_worker_names_the_session_to_the_prefill_router():
    router = FakeWorkers(RouteResponse(instance_id=B))
    picker = PrefillPicker(FakeWorkers(), router)  # type: ignore[arg-type]
    assert await picker.pick("r1:0", [1, 2], session_id="s1") == B
    assert router.calls[0][0].session_id == "s1"


def test_with_busy_thresholds_a_session_on_a_busy_worker_moves_to_a_free_one():
    router = RouterOptions(mode="round-robin", session_ttl=30.0, active_decode_blocks_threshold=0.5).make()
    for w in WORKERS:
        router.add_instance(w)
        router.set_capacity(w, 100)
    first = router.choose("r0", [1, 2], WORKERS, session_id="s").instance_id
    assert router.choose("r1", [1, 2], WORKERS, session_id="s").instance_id == first
    router.busy.apply_load(WorkerLoad(worker_id=first, kv_used_blocks=90, kv_total_blocks=100))
    moved = router.choose("r2", [1, 2], WORKERS, session_id="s").instance_id
    assert moved != first
    assert router.choose("r3", [1, 2], WORKERS, session_id="s").instance_id == moved
