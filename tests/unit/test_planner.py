"""The planner's decision logic: capacity -> worker counts, limits, hysteresis, settling, online capacity."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from protocol.discovery import ModelCard, RuntimeConfig
from protocol.stats import ModelStats
from services.planner.args import PlannerOptions, parse
from services.planner.capacity import DECODE_TPS, PREFILL_TPS, Bounds, Capacity, load_profile
from services.planner.decision import DOWN, HOLD, UP, Planner
from services.planner.observe import (
    AGG,
    DECODE,
    PREFILL,
    Pool,
    PoolLoad,
    Snapshot,
    Traffic,
    TrafficWindow,
    p90,
    pool_of,
)

AGG_POOL = Pool("m", "backend", AGG)
OPTS = PlannerOptions(ttft_p90_ms=100, itl_p90_ms=20, interval_s=1, min_workers=1, max_workers=8,
                      scale_down_intervals=3, min_requests=5)


def traffic(in_tps: float = 0, out_tps: float = 0, ttft_ms: float | None = 50, itl_ms: float | None = 10,
            requests: int = 100) -> Traffic:
    return Traffic(1.0, requests, int(in_tps), int(out_tps), 0, None if ttft_ms is None else ttft_ms / 1000,
                   None if itl_ms is None else itl_ms / 1000)


def snap(live: int, t: Traffic | None = None, pool: Pool = AGG_POOL, waiting: int = 0) -> Snapshot:
    return Snapshot({pool: live}, {pool.model: t} if t else {}, {pool: PoolLoad(waiting=waiting)}, 1.0)


def profiled(prefill: float = 1000, decode: float = 100, **opts: object) -> Planner:
    import msgspec

    return Planner(msgspec.structs.replace(OPTS, **opts), Capacity({"*": {PREFILL_TPS: prefill, DECODE_TPS: decode}}))


def test_capacity_gives_the_count_the_larger_limit_needs() -> None:
    p = profiled()
    [d] = p.decide(snap(1, traffic(in_tps=2500, out_tps=420)), now=10)
    assert (d.action, d.desired) == (UP, 5)  # decode: ceil(420 / 100) beats prefill: ceil(2500 / 1000)
    assert d.demand == {PREFILL_TPS: 2500, DECODE_TPS: 420}


def test_prefill_and_decode_pools_size_by_their_own_limit() -> None:
    p = profiled()
    pre, dec = Pool("m", "prefill", PREFILL), Pool("m", "backend", DECODE)
    s = Snapshot({pre: 1, dec: 1}, {"m": traffic(in_tps=3500, out_tps=150)}, {}, 1.0)
    by_role = {d.pool.role: d.desired for d in p.decide(s, now=10)}
    assert by_role == {PREFILL: 4, DECODE: 2}


def test_min_and_max_bound_the_count() -> None:
    p = profiled(max_workers=3)
    assert p.decide(snap(1, traffic(out_tps=5000)), now=10)[0].desired == 3
    idle = profiled(min_workers=2)
    [d] = idle.decide(snap(1), now=10)  # no traffic at all
    assert (d.action, d.desired) == (UP, 2)


def test_prefill_pools_have_their_own_limits() -> None:
    p = profiled(prefill_max_workers=2)
    pre = Pool("m", "prefill", PREFILL)
    assert p.decide(snap(1, traffic(in_tps=9000), pool=pre), now=10)[0].desired == 2


def test_scale_down_waits_for_consecutive_intervals_and_takes_the_most_wanted() -> None:
    p = profiled()
    wants = []
    for i, out in enumerate((150, 220, 120)):  # want 2, 3, 2 of 4 live (each at 80 % of capacity)
        [d] = p.decide(snap(4, traffic(out_tps=out)), now=10 + i)
        wants.append((d.action, d.desired))
    assert wants == [(HOLD, 4), (HOLD, 4), (DOWN, 3)]


def test_while_targets_hold_scale_up_waits_for_demand_past_the_band() -> None:
    p = profiled()
    [d] = p.decide(snap(2, traffic(out_tps=210)), now=10)  # 105 % of two workers' capacity, ITL fine
    assert (d.action, d.desired) == (HOLD, 2)
    [d] = p.decide(snap(2, traffic(out_tps=210, itl_ms=30)), now=11)  # ... the same with ITL over target
    assert (d.action, d.desired) == (UP, 3)
    [d] = p.decide(snap(3, traffic(out_tps=370)), now=12)  # 123 %
    assert (d.action, d.desired) == (UP, 4)


def test_scale_down_keeps_headroom() -> None:
    p = profiled(scale_down_intervals=1)
    [d] = p.decide(snap(3, traffic(out_tps=190)), now=10)  # two would do at 95 % of capacity: too close
    assert (d.action, d.desired) == (HOLD, 3)
    [d] = p.decide(snap(3, traffic(out_tps=150)), now=11)  # two at 75 %
    assert (d.action, d.desired) == (DOWN, 2)


def test_a_missed_target_while_a_backlog_drains_teaches_nothing() -> None:
    p = Planner(OPTS, Capacity())
    p.decide(snap(2, traffic(in_tps=800, requests=2), waiting=9), now=10)
    p.decide(snap(2, traffic(in_tps=800, ttft_ms=900), waiting=4), now=11)  # the queue shrinks: old backlog
    p.decide(snap(2, traffic(in_tps=800, ttft_ms=900), waiting=4), now=11.5)  # ... or stands
    assert p.capacity.bounds == {}
    p.decide(snap(2, traffic(in_tps=800, ttft_ms=900), waiting=6), now=12)  # it grows: this load is too much
    assert p.capacity.bounds[(AGG_POOL, PREFILL_TPS)].hi == 400


def test_a_busy_interval_resets_the_scale_down_count() -> None:
    p = profiled()
    acts = [p.decide(snap(4, traffic(out_tps=out)), now=10 + i)[0].action for i, out in enumerate((150, 400, 150,
                                                                                                   150, 150))]
    assert acts == [HOLD, HOLD, HOLD, HOLD, DOWN]


def test_no_scale_down_while_requests_wait_in_queues() -> None:
    p = profiled(scale_down_intervals=1)
    assert p.decide(snap(4, traffic(out_tps=100), waiting=3), now=10)[0].action == HOLD
    assert p.decide(snap(4, traffic(out_tps=100)), now=11)[0].action == DOWN


def test_a_pool_settles_before_the_next_change() -> None:
    p = profiled(settle_s=30)
    assert p.decide(snap(1, traffic(out_tps=300)), now=10)[0].desired == 3
    [d] = p.decide(snap(2, traffic(out_tps=900)), now=11)  # the third worker is still starting
    assert (d.action, d.desired, d.reason) == (HOLD, 3, "settling")
    assert p.decide(snap(3, traffic(out_tps=700)), now=12)[0].desired == 7
    assert p.decide(snap(3, traffic(out_tps=700)), now=50)[0].action == UP  # settle_s passed: ask again


def test_dry_run_never_settles() -> None:
    import msgspec

    p = Planner(msgspec.structs.replace(OPTS), Capacity({"*": {DECODE_TPS: 100}}), act=False)
    for now in (10, 11):
        [d] = p.decide(snap(1, traffic(out_tps=300)), now=now)
        assert (d.action, d.desired) == (UP, 3)


def test_unknown_capacity_holds_until_a_target_is_missed() -> None:
    p = Planner(OPTS, Capacity())
    [d] = p.decide(snap(2, traffic(in_tps=800, out_tps=80, requests=2)), now=10)
    assert (d.action, d.desired, d.reason) == (HOLD, 2, "capacity unknown")
    # TTFT p90 over target at 400 prefill tokens/s per worker: capacity guessed at half that
    [d] = p.decide(snap(2, traffic(in_tps=800, out_tps=80, ttft_ms=400, itl_ms=None)), now=11)
    assert (d.action, d.desired) == (UP, 4)
    # a held interval at 200/s per worker: the estimate is between, sqrt(200 * 400)
    p.decide(snap(4, traffic(in_tps=800, out_tps=80, itl_ms=None)), now=12)
    [d] = p.decide(snap(4, traffic(in_tps=800, out_tps=80, itl_ms=None)), now=13)
    assert d.capacity[PREFILL_TPS] == pytest.approx(282.84, rel=1e-3)


def test_learning_waits_for_a_whole_interval_after_a_change() -> None:
    p = Planner(OPTS, Capacity())
    p.decide(snap(1, traffic(in_tps=400, ttft_ms=400)), now=10)  # learns hi = 400, wants 2
    assert p.capacity.bounds[(AGG_POOL, PREFILL_TPS)].hi == 400
    p.decide(snap(2, traffic(in_tps=400, ttft_ms=400)), now=10.5)  # settled now; the backlog is still there
    assert p.capacity.bounds[(AGG_POOL, PREFILL_TPS)].hi == 400  # not blamed on the new fleet
    p.decide(snap(2, traffic(in_tps=400, ttft_ms=40)), now=11.5)  # a whole interval on 2 workers
    assert p.capacity.bounds[(AGG_POOL, PREFILL_TPS)].lo == 200


def test_quiet_intervals_teach_nothing() -> None:
    p = Planner(OPTS, Capacity())
    p.decide(snap(1, traffic(in_tps=400, ttft_ms=400, requests=2)), now=10)
    assert p.capacity.bounds == {}


def test_bounds_bisect_between_held_and_failed_rates() -> None:
    b = Bounds()
    assert b.estimate() is None
    b.observe(100, held=True)
    assert b.estimate() == 100
    b.observe(400, held=False)
    assert b.estimate() == pytest.approx(200)  # sqrt(100 * 400)
    b.observe(200, held=False)
    assert b.estimate() == pytest.approx(141.42, rel=1e-3)
    b.observe(300, held=True)  # the workload got lighter: the failure bound goes
    assert (b.lo, b.hi) == (300, None)
    b.observe(50, held=False)  # ... or heavier: the held bound falls below the failure
    assert (b.lo, b.hi) == (25, 50)


def test_profile_file(tmp_path: Path) -> None:
    f = tmp_path / "profile.json"
    f.write_text(json.dumps({"*": {DECODE_TPS: 100}, "big": {DECODE_TPS: 10, PREFILL_TPS: 50}}))
    cap = Capacity(load_profile(str(f)))
    assert cap.per_worker(Pool("big", "backend"), DECODE_TPS) == 10
    assert cap.per_worker(Pool("small", "backend"), DECODE_TPS) == 100
    assert cap.per_worker(Pool("small", "backend"), PREFILL_TPS) is None
    f.write_text(json.dumps({"*": {"tokens": 1}}))
    with pytest.raises(ValueError, match="unknown keys"):
        load_profile(str(f))


def test_traffic_window_merges_frontends() -> None:
    w = TrafficWindow()
    w.add(ModelStats("m", requests=3, input_tokens=30, output_tokens=9, ttft_s=[0.1, 0.2, 0.3]))
    w.add(ModelStats("m", requests=7, input_tokens=70, output_tokens=21, ttft_s=[0.01] * 7, itl_s=[0.5]))
    t = w.close(2.0)
    assert (t.requests, t.input_tps, t.output_tps, t.itl_p90_s) == (10, 50, 15, 0.5)
    assert t.ttft_p90_s == 0.2  # nearest rank 9 of 10
    assert p90([]) is None


def test_pool_of_a_card() -> None:
    agg = ModelCard("m", "i1", "backend")
    pre = ModelCard("m", "i2", "prefill", runtime=RuntimeConfig(disaggregation_mode="prefill"))
    dec = ModelCard("m", "i3", "backend", runtime=RuntimeConfig(disaggregation_mode="decode"))
    assert [pool_of(c).role for c in (agg, pre, dec)] == [AGG, PREFILL, DECODE]


def test_flags() -> None:
    cfg = parse(["--ttft-p90-ms", "250", "--itl-p90-ms", "30", "--interval", "2", "--min-workers", "2",
                 "--max-workers", "6", "--dry-run", "--connector", "kubernetes"])
    assert (cfg.planner.ttft_p90_ms, cfg.planner.itl_p90_ms, cfg.planner.interval_s) == (250, 30, 2)
    assert (cfg.planner.min_workers, cfg.planner.max_workers) == (2, 6)
    assert cfg.connector.dry_run and cfg.connector.kind == "kubernetes"


def test_frontend_window_counts_and_samples() -> None:
    from services.frontend.stats import StatsWindow

    w = StatsWindow(samples=4)
    for i in range(10):
        w.started("m", 100)
        w.tokens("m", 1, first_after=i / 100)
        w.tokens("m", 3, first_after=None)
        w.ended("m", ok=i != 9, mean_itl=0.01)
    [s] = w.take()
    assert (s.model, s.requests, s.input_tokens, s.output_tokens, s.finished, s.failed) == ("m", 10, 1000, 40, 9, 1)
    assert len(s.ttft_s) == 4 and set(s.ttft_s) <= {i / 100 for i in range(10)}  # a sample, bounded
    assert w.take() == []  # a new window


async def test_a_connector_that_cannot_go_all_the_way_does_not_freeze_the_pool() -> None:
    from services.planner.loop import PlanLoop

    class StartsOnly:  # like the local connector beside workers it did not start: it can stop none of them
        def __init__(self) -> None:
            self.asked: list[int] = []

        def pools(self) -> list[Pool]:
            return []

        def handles(self, pool: Pool) -> bool:
            return True

        async def scale(self, pool: Pool, actual: int, desired: int) -> int:
            self.asked.append(desired)
            return max(actual, desired)

        async def close(self) -> None:
            return None

    connector = StartsOnly()
    loop = PlanLoop(None, profiled(scale_down_intervals=1, settle_s=1000), connector, 1.0)  # type: ignore[arg-type]
    [d] = await loop.step(snap(3, traffic(out_tps=50)))
    assert (d.action, d.desired) == (DOWN, 1)
    [d] = await loop.step(snap(3, traffic(out_tps=450)))  # not held "settling" towards 1 worker
    assert (d.action, d.desired) == (UP, 5)
    assert connector.asked == [1, 5]


def test_shoal_up_passes_what_follows_planner_to_the_planner() -> None:
    from shared.cli import build_parser

    a = build_parser().parse_args(["up", "--engine", "mock", "--planner", "--ttft-p90-ms", "300", "--max-workers", "4"])
    assert (a.engine, a.planner) == ("mock", ["--ttft-p90-ms", "300", "--max-workers", "4"])
    assert parse([*a.planner, "--dry-run"]).planner.max_workers == 4  # the planner's own flags
    assert build_parser().parse_args(["up"]).planner is None


async def test_the_frontend_records_each_request_into_the_window() -> None:
    from protocol.messages import OutputChunk
    from services.frontend.request_metrics import Meter
    from services.frontend.stats import WINDOW

    def batch(n: int, last: bool) -> list[OutputChunk]:
        return [OutputChunk(token_ids=[7] * n, finish_reason="length" if last else None)]

    WINDOW.take()
    done = Meter("w", 12)  # as the dispatcher records each request
    for i, n in enumerate([2, 1, 3]):
        done.batch(batch(n, i == 2))
    done.end()
    gone = Meter("w", 5)
    gone.batch(batch(1, False))
    gone.end()  # the client left after one batch: counted as a request, not as a failure or a finish
    [s] = WINDOW.take()
    assert (s.requests, s.input_tokens, s.output_tokens, s.finished, s.failed) == (2, 17, 7, 1, 0)
    assert len(s.ttft_s) == 2 and len(s.itl_s) == 1  # a first token each; a mean gap for the one that finished


def test_a_failed_request_is_recorded_by_its_error_code() -> None:
    from services.frontend.request_metrics import Meter
    from shared.runtime.errors import WorkerLost

    lost, broken = Meter("w", 1), Meter("w", 1)
    lost.failed(WorkerLost("gone"))
    broken.failed(ValueError("bug"))
    assert (lost.outcome, broken.outcome) == ("worker_lost", "internal")


def test_the_local_connector_sizes_the_pools_its_worker_flags_make(tiny_model: Path) -> None:
    from services.planner.connectors.local import LocalConnector
    from shared.config.args import CommonConfig

    cfg = parse(["--worker-args", f"--engine reference --model-path {tiny_model} --disaggregation-mode prefill",
                 "--worker-args", f"--engine reference --model-path {tiny_model} --disaggregation-mode decode"])
    local = LocalConnector(CommonConfig(), cfg.connector.worker_args, Path("."))
    assert sorted(local.pools()) == [Pool("tiny", "backend", DECODE), Pool("tiny", "prefill", PREFILL)]
    assert {f.module for f in local.fleets.values()} == {"prefill", "decode"}
    with pytest.raises(SystemExit):
        parse(["--connector", "local"])  # nothing to start
