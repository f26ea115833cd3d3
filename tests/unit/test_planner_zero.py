"""Scale to zero in the planner's decision: with --min-workers 0 and --scale-to-zero-idle, the last worker
goes only after that long without a request, a parked pool holds at zero until a cold start wakes it,
and the woken pool settles instead of draining at once."""

from __future__ import annotations

import pytest

from services.planner.args import PlannerOptions, parse
from services.planner.capacity import Capacity
from services.planner.decision import DOWN, HOLD, UP, Planner
from services.planner.observe import AGG, PREFILL, Pool, PoolLoad, Snapshot, Traffic

POOL = Pool("m", "backend", AGG)
OPTS = PlannerOptions(min_workers=0, scale_to_zero_idle_s=10.0, interval_s=1.0, settle_s=30.0)


def snap(live: int, requests: int = 0, running: int = 0) -> Snapshot:
    return Snapshot({POOL: live} if live else {}, {"m": Traffic(1.0, requests=requests)},
                    {POOL: PoolLoad(running=running)}, 1.0)


def test_the_last_worker_goes_after_the_idle_period_and_the_pool_stays_parked():
    pl = Planner(OPTS, Capacity(None))
    pl.track(POOL)
    assert pl.decide(snap(1, requests=3), 0.0)[0].action == HOLD
    assert pl.decide(snap(1), 5.0)[0].action == HOLD  # idle 5 s of 10
    assert pl.decide(snap(1, running=1), 9.0)[0].action == HOLD  # a request still in its worker: active
    d = pl.decide(snap(1), 18.0)[0]
    assert d.action == HOLD  # idle 9 s since the request in flight
    d = pl.decide(snap(1), 19.5)[0]
    assert (d.action, d.desired) == (DOWN, 0) and "scale to zero" in d.reason
    d = pl.decide(snap(0), 60.0)[0]
    assert (d.action, d.desired) == (HOLD, 0) and "parked" in d.reason  # no refill: only a cold start


def test_a_cold_start_settles_then_idles_out_again():
    pl = Planner(OPTS, Capacity(None))
    pl.track(POOL)
    pl.woken(POOL, 100.0)
    assert pl.decide(snap(0), 101.0)[0].reason == "settling"  # the worker is starting
    assert pl.decide(snap(1, requests=1), 104.0)[0].action == HOLD
    assert pl.decide(snap(1), 110.0)[0].action == HOLD
    assert pl.decide(snap(1), 114.5)[0].action == DOWN


def test_a_worker_that_starts_slower_than_the_idle_period_is_not_drained_on_arrival():
    pl = Planner(OPTS, Capacity(None))
    pl.track(POOL)
    pl.woken(POOL, 100.0)
    assert pl.decide(snap(0), 105.0)[0].reason == "settling"
    # up 12 s after the wake (longer than the 10 s idle period); its cold-start request is still on the way
    assert pl.decide(snap(1), 112.0)[0].action == HOLD
    assert pl.decide(snap(1), 121.0)[0].action == HOLD
    assert pl.decide(snap(1), 122.5)[0].action == DOWN


def test_a_parked_prefill_pool_wakes_on_its_models_requests():
    """A disaggregated model's prefill pool at zero while its decode workers serve (prefilling locally): no
    frontend asks for its cold start, so the model's own requests start one prefill worker."""
    prefill = Pool("m", "prefill", PREFILL)
    pl = Planner(PlannerOptions(prefill_min_workers=0, scale_to_zero_idle_s=10.0, interval_s=1.0, settle_s=30.0),
                 Capacity(None))
    pl.track(prefill)

    def at(live: int, requests: int) -> Snapshot:
        return Snapshot({prefill: live} if live else {}, {"m": Traffic(1.0, requests=requests)}, {}, 1.0)

    d = pl.decide(at(0, 0), 0.0)[0]
    assert (d.action, d.desired) == (HOLD, 0)  # parked while the model is idle
    d = pl.decide(at(0, 5), 1.0)[0]
    assert (d.action, d.desired) == (UP, 1)


def test_without_the_idle_flag_min_workers_zero_keeps_the_old_rules():
    pl = Planner(PlannerOptions(min_workers=0), Capacity(None))
    pl.track(POOL)
    assert pl.decide(snap(1), 0.0)[0].action == HOLD  # capacity unknown: keeps what it has
    assert pl.decide(snap(0), 1.0)[0].action == HOLD
    pl1 = Planner(PlannerOptions(min_workers=1), Capacity(None))
    pl1.track(POOL)
    assert pl1.decide(snap(0), 0.0)[0].action == UP  # a pool whose workers died is refilled


def test_negative_min_workers_is_refused(capsys):
    with pytest.raises(SystemExit):
        parse(["--dry-run", "--min-workers", "-1"])
    assert parse(["--dry-run", "--min-workers", "0", "--scale-to-zero-idle", "5"]).planner.scale_to_zero_idle_s == 5
