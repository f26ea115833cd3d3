"""Busy thresholds: workers' reports plus what the router sent since; every mode skips busy workers."""

from __future__ import annotations

from collections import Counter
from types import SimpleNamespace

import pytest

from protocol.discovery import ModelCard
from protocol.kv_events import WorkerLoad
from protocol.messages import HTTP_STATUS, EngineRequest, ErrorCode, OutputChunk, RouteRequest, StopConditions
from services.frontend.dispatch import Dispatcher
from services.frontend.models import ModelEntry
from services.router.handler import RouteHandler
from services.worker.roles.prefill_pick import PrefillPicker
from shared.routing import RoundRobinRouter
from shared.routing.busy import BusyFilter
from shared.routing.busy_router import BusyRouter
from shared.routing.options import RouterOptions
from shared.runtime.errors import WorkerLost, WorkersBusy, from_info

PS = 16
A, B = "a" * 16, "b" * 16
PROMPT = list(range(64))  # 4 blocks


def load(worker: str, used: int = 0, total: int = 100, prefill: int = 0) -> WorkerLoad:
    return WorkerLoad(worker_id=worker, kv_used_blocks=used, kv_total_blocks=total, prefill_tokens=prefill)


def test_a_report_past_the_kv_threshold_makes_a_worker_busy_and_a_lower_one_frees_it():
    f = BusyFilter(PS, kv_fraction=0.5)
    f.apply_load(load(A, used=50))
    assert not f.busy(A)  # at the threshold, not past it
    f.apply_load(load(A, used=51))
    assert f.busy(A) and f.free([A, B]) == [B]
    f.apply_load(load(A, used=10))
    assert not f.busy(A)


def test_sends_between_reports_count_so_kv_passes_the_threshold_by_at_most_one_request():
    f = BusyFilter(PS, kv_fraction=0.5)
    f.apply_load(load(A, used=40))
    admitted = 0
    while not f.busy(A) and admitted < 10:  # no report comes: only what this router sent moves the estimate
        f.sent(f"r{admitted}", A, len(PROMPT))
        admitted += 1
    assert admitted == 3  # 40 -> 44 -> 48 -> 52 blocks: the third request crossed 50
    assert f.kv_blocks(A) <= 50 + 4
    f.apply_load(load(A, used=20))  # the next report covers those requests: the estimate restarts from it
    assert f.kv_blocks(A) == 20
    assert not f.busy(A)


def test_a_finished_request_frees_its_blocks_before_the_next_report():
    f = BusyFilter(PS, kv_fraction=0.5, prefill_tokens=100)
    f.sent("old", A, len(PROMPT))
    f.apply_load(load(A, used=52, prefill=0))  # counts "old", now running
    f.sent("new", A, 90)
    assert f.busy(A)
    f.finished("old")  # 52 - 4 = 48 blocks
    assert f.kv_blocks(A) == 48 + 6 and f.queued_prefill(A) == 90  # "new" is still queued
    f.finished("new")
    assert (f.kv_blocks(A), f.queued_prefill(A)) == (48, 0) and not f.busy(A)


def test_unfinished_requests_are_a_floor_under_a_stale_low_report():
    f = BusyFilter(PS, kv_fraction=0.1)
    f.apply_load(load(A, used=0))
    for i in range(3):
        f.sent(f"r{i}", A, len(PROMPT))  # 12 blocks > 10
    f.apply_load(load(A, used=0))  # the worker has not started them yet
    assert f.kv_blocks(A) == 12 and f.busy(A)
    for i in range(3):
        f.finished(f"r{i}")
    assert f.kv_blocks(A) == 0 and not f.busy(A)


def test_the_model_card_gives_capacity_before_any_report():
    f = BusyFilter(PS, kv_fraction=0.5)
    f.set_capacity(A, 8)
    f.sent("r0", A, len(PROMPT))
    assert not f.busy(A)  # 4 of 8: at the threshold
    f.sent("r1", A, 1)
    assert f.busy(A)
    f.finished("r1")
    assert not f.busy(A)
    late = BusyFilter(PS, kv_fraction=0.5)
    late.sent("r0", B, len(PROMPT))
    assert not late.busy(B)  # no capacity known: no judgement on KV
    late.set_capacity(B, 6)  # the card arrives: 4 of 6 blocks is past half
    assert late.busy(B)


def test_queued_prefill_tokens_from_reports_and_sends():
    f = BusyFilter(PS, prefill_tokens=100)
    f.apply_load(load(A, prefill=90))
    assert not f.busy(A)
    f.sent("r0", A, 11)
    assert f.busy(A)
    f.apply_load(load(A, prefill=0))  # the worker prefilled its queue
    assert not f.busy(A)


def test_thresholds_are_checked():
    with pytest.raises(ValueError, match="fraction"):
        BusyFilter(PS, kv_fraction=1.5)
    with pytest.raises(ValueError, match="prefill"):
        BusyFilter(PS, prefill_tokens=-1)


@pytest.mark.parametrize("mode", ["round-robin", "random", "kv"])
def test_every_mode_skips_busy_workers_and_refuses_when_all_are(mode: str):
    r = RouterOptions(mode=mode, active_decode_blocks_threshold=0.5).make(page_size=PS)
    assert isinstance(r, BusyRouter) and r.mode == mode
    for iid in (A, B):
        r.add_instance(iid)
        r.set_capacity(iid, 100)
    r.busy.apply_load(load(A, used=90))
    picks = Counter(r.choose(f"r{i}", PROMPT, [A, B]).instance_id for i in range(13))
    assert picks == {B: 13}  # 12 x 4 = 48 blocks: not past 50, so a 13th goes; 52 is past it
    with pytest.raises(WorkersBusy) as e:
        r.choose("r13", PROMPT, [A, B])
    assert e.value.retry_after and HTTP_STATUS[e.value.code] == 503
    r.finished("r0")
    assert r.choose("r14", PROMPT, [A, B]).instance_id == B


def test_no_threshold_no_wrapper():
    assert isinstance(RouterOptions().make(page_size=PS), RoundRobinRouter)


async def test_the_router_service_answers_all_busy_with_a_typed_error():
    busy = BusyFilter(PS, kv_fraction=0.5)
    handler = RouteHandler(BusyRouter(RoundRobinRouter(), busy), {A})
    busy.apply_load(load(A, used=99))
    with pytest.raises(WorkersBusy) as e:
        await anext(handler(RouteRequest(request_id="r", token_ids=PROMPT), None))  # type: ignore[arg-type]
    again = from_info(e.value.info())  # what the caller raises from the stream's last frame
    assert isinstance(again, WorkersBusy) and again.retry_after == e.value.retry_after
    assert again.code == ErrorCode.WORKERS_BUSY


async def test_a_decode_worker_obeys_its_prefill_router_saying_all_are_busy():
    class BusyRouterClient:
        instances = {"r" * 16: object()}

        async def generate(self, req: RouteRequest, request_id: str):
            raise WorkersBusy("all 2 workers are busy", retry_after=1.0)
            yield

    prefill = SimpleNamespace(instances={A: object(), B: object()})
    picker = PrefillPicker(prefill, BusyRouterClient())  # type: ignore[arg-type]
    with pytest.raises(WorkersBusy):  # not a round-robin pick past the router
        await picker.pick("k", PROMPT)


async def test_a_migrating_request_is_never_refused_for_busy_workers():
    busy = BusyFilter(PS, kv_fraction=0.5)
    router = BusyRouter(RoundRobinRouter(), busy)
    for iid in (A, B):
        router.add_instance(iid)
        router.set_capacity(iid, 100)
    busy.apply_load(load(B, used=90))  # only A is free, and A dies mid-stream

    class Client:
        instances = {A: SimpleNamespace(healthy=True), B: SimpleNamespace(healthy=True)}

        async def generate(self, request: EngineRequest, request_id: str, instance_id: str = "", **kw: object):
            if instance_id == A:
                yield [OutputChunk(token_ids=[7])]
                raise WorkerLost("gone", A, started=True)
            yield [OutputChunk(token_ids=[8], finish_reason="length")]

    card = ModelCard(name="m", instance_id="", component="backend")
    model = ModelEntry("m", None, Client(), router, cards={A: card, B: card})  # type: ignore[arg-type]
    request = EngineRequest(request_id="r", token_ids=PROMPT, stop=StopConditions(max_tokens=2))
    with pytest.raises(WorkersBusy):  # B is busy for a new request...
        router.choose("new", PROMPT, [B])
    stream = Dispatcher(migration_limit=1).stream(model, request)
    tokens = [t async for items in stream for c in items for t in c.token_ids]
    assert tokens == [7, 8]  # ...but takes the one A was streaming
