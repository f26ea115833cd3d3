"""The decision: how many workers each pool needs now, with limits, hysteresis and a settle time.

Per pool and limit (capacity.py), need = ceil(demand / per-worker capacity); the pool wants the
largest need among the limits it knows a capacity for (none known: it keeps what it has), clamped to
its min/max. More workers are asked for at once (while the targets hold, only once demand passes
120 % of what the pool takes); fewer only after `scale_down_intervals` decisions in a row all
wanted fewer, counted at 80 % of capacity (then the most of them), and never while requests wait
in the workers' queues. After a change the pool settles: no new change, and no learning, until
discovery shows the count asked for (or `settle_s` passes); learning then waits one whole interval
more, and ignores a missed target while the queues hold requests but do not grow (a backlog being
worked off, not a load too high).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from services.planner.args import PlannerOptions
from services.planner.capacity import DECODE_TPS, PREFILL_TPS, Capacity
from services.planner.observe import AGG, DECODE, PREFILL, Pool, PoolLoad, Snapshot, Traffic

UP, DOWN, HOLD = "up", "down", "hold"
BAND = 0.2  # hysteresis: fewer workers only if they would run at most 80 % of capacity; more, while the targets
#             hold, only once demand passes 120 % of what the pool can take (noise does not flap the fleet)
_LIMITS = {AGG: (PREFILL_TPS, DECODE_TPS), PREFILL: (PREFILL_TPS,), DECODE: (DECODE_TPS,)}


@dataclass(frozen=True)
class Decision:
    pool: Pool
    actual: int
    desired: int
    action: str  # UP | DOWN | HOLD
    reason: str
    demand: dict[str, float] = field(default_factory=dict)  # limit -> tokens/s over the interval
    capacity: dict[str, float | None] = field(default_factory=dict)  # limit -> per worker
    waiting: int = 0  # requests queued in the pool's workers


@dataclass
class _PoolState:
    target: int | None = None  # the count last asked for
    changed_at: float = -math.inf
    settled_at: float = -math.inf  # when discovery first showed the target after the last change
    below: list[int] = field(default_factory=list)  # recent wants below the live count
    waiting: int = 0  # requests queued in the pool's workers at the last decision
    active_at: float | None = None  # last decision that saw a request or a request in a worker (scale to zero)
    live: int = 0  # live workers at the last decision: one that arrives starts a fresh idle period


class Planner:
    def __init__(self, opts: PlannerOptions, capacity: Capacity, act: bool = True) -> None:
        self.opts = opts
        self.capacity = capacity
        self.act = act  # False (dry run): nothing changes, so nothing settles
        self.pools: dict[Pool, _PoolState] = {}  # every pool ever seen: one whose workers all died is refilled

    def track(self, pool: Pool) -> None:
        """Size `pool` from now on, even while none of its workers is live."""
        self.pools.setdefault(pool, _PoolState())

    def woken(self, pool: Pool, now: float) -> None:
        """A cold start asked for one worker of `pool` (which had none): it settles, and counts as active."""
        st = self.pools.setdefault(pool, _PoolState())
        st.target, st.changed_at, st.below, st.active_at = 1, now, [], now

    def retarget(self, pool: Pool, count: int) -> None:
        """The connector could move `pool` only to `count` (e.g. it stops only workers it started)."""
        st = self.pools.get(pool)
        if st is not None and st.target is not None:
            st.target = count

    def decide(self, snap: Snapshot, now: float) -> list[Decision]:
        for pool in snap.live:
            self.track(pool)
        return [self._decide(pool, st, snap, now) for pool, st in sorted(self.pools.items())]

    def _decide(self, pool: Pool, st: _PoolState, snap: Snapshot, now: float) -> Decision:
        actual = snap.live.get(pool, 0)
        traffic = snap.traffic_of(pool.model)
        demand = {k: _demand(traffic, k) for k in _LIMITS[pool.role]}
        settling = st.target is not None and actual != st.target and now - st.changed_at < self.opts.settle_s
        if not settling and st.settled_at < st.changed_at:
            st.settled_at = now
        load = snap.load.get(pool, PoolLoad())
        waiting_before, waiting = st.waiting, load.waiting
        st.waiting = waiting
        arrived, st.live = actual > st.live, actual
        if st.active_at is None or arrived or traffic.requests or load.running or load.waiting:
            st.active_at = now  # a worker that just arrived (a cold start's) is not drained before its request
        idle_s = now - st.active_at
        if not settling and now - snap.seconds >= st.settled_at and actual > 0:
            # a queue that did not grow is a backlog being worked off: a missed target says nothing of this load
            self._learn(pool, traffic, demand, actual, backlog=0 < waiting <= waiting_before)
        capacity = {k: self.capacity.per_worker(pool, k) for k in demand}
        want, why = self._want(pool, actual, demand, capacity, 1.0)
        want_down, _ = self._want(pool, actual, demand, capacity, 1 - BAND)
        want_up = want if self._missed(pool, traffic) else self._want(pool, actual, demand, capacity, 1 + BAND)[0]

        def result(desired: int, action: str, reason: str) -> Decision:
            if action != HOLD and self.act:
                st.target, st.changed_at, st.below = desired, now, []
            return Decision(pool, actual, desired, action, reason, demand, capacity, waiting)

        if settling:
            return result(st.target or actual, HOLD, "settling")
        if self.zero_allowed(pool):
            if actual == 0:
                if pool.role == PREFILL and (traffic.requests or load.running or load.waiting):
                    # the model is served (its decode workers prefill locally meanwhile): no frontend asks for
                    # a cold start of this pool, so its own traffic wakes it
                    return result(1, UP, "requests for the model: a prefill worker starts")
                return result(0, HOLD, "parked: a request starts a worker (cold start)")
            if idle_s >= self.opts.scale_to_zero_idle_s:
                return result(0, DOWN, f"idle {idle_s:.0f}s: scale to zero (parked)")
        if want_up > actual:
            return result(max(want, want_up), UP, why)
        if want_down >= actual:
            st.below = []
            return result(actual, HOLD, why)
        if waiting > 0 and actual <= self._hi(pool):
            st.below = []
            return result(actual, HOLD, "requests queued")
        st.below.append(want_down)
        if len(st.below) < self.opts.scale_down_intervals:
            return result(actual, HOLD, f"{why}; fewer wanted {len(st.below)}/{self.opts.scale_down_intervals}")
        return result(max(st.below), DOWN, why)

    def _missed(self, pool: Pool, traffic: Traffic) -> bool:
        """Whether a target the pool answers for was missed over the interval."""
        ttft = PREFILL_TPS in _LIMITS[pool.role] and (traffic.ttft_p90_s or 0) * 1000 > self.opts.ttft_p90_ms
        itl = DECODE_TPS in _LIMITS[pool.role] and (traffic.itl_p90_s or 0) * 1000 > self.opts.itl_p90_ms
        return ttft or itl

    def _learn(self, pool: Pool, traffic: Traffic, demand: dict[str, float], actual: int, backlog: bool) -> None:
        if traffic.requests < self.opts.min_requests:
            return
        observed = {PREFILL_TPS: (traffic.ttft_p90_s, self.opts.ttft_p90_ms),
                    DECODE_TPS: (traffic.itl_p90_s, self.opts.itl_p90_ms)}
        for limit, rate in demand.items():
            p90, target_ms = observed[limit]
            held = p90 is not None and p90 * 1000 <= target_ms
            if p90 is not None and (held or not backlog):
                self.capacity.observe(pool, limit, rate / actual, held)

    def _want(self, pool: Pool, actual: int, demand: dict[str, float], capacity: dict[str, float | None],
              fill: float) -> tuple[int, str]:
        """Workers to carry `demand` with each at `fill` of its capacity."""
        needs = {k: math.ceil(demand[k] / (c * fill)) for k, c in capacity.items() if c}
        if needs:
            limit = max(needs, key=lambda k: needs[k])
            want, why = needs[limit], f"{limit}: {demand[limit]:.0f}/s at {capacity[limit]:.0f}/s per worker"
        else:
            want, why = actual, "capacity unknown"
        lo, hi = self._lo(pool), self._hi(pool)
        if want < lo or want > hi:
            why += f"; limits {lo}..{hi}"
        return min(max(want, lo), hi), why

    def _lo(self, pool: Pool) -> int:
        lo = self.opts.prefill_min_workers if pool.role == PREFILL else self.opts.min_workers
        return 1 if lo == 0 and self.zero_allowed(pool) else lo  # the last one goes only by the idle rule

    def zero_allowed(self, pool: Pool) -> bool:
        lo = self.opts.prefill_min_workers if pool.role == PREFILL else self.opts.min_workers
        return lo == 0 and self.opts.scale_to_zero_idle_s > 0

    def _hi(self, pool: Pool) -> int:
        return self.opts.prefill_max_workers if pool.role == PREFILL else self.opts.max_workers


def _demand(t: Traffic, limit: str) -> float:
    return t.input_tps if limit == PREFILL_TPS else t.output_tps
