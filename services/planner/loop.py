"""Every interval: take what was observed, decide, log and export each decision, act unless dry-run."""

from __future__ import annotations

import asyncio
import time

from services.planner.connectors import Connector
from services.planner.decision import HOLD, Decision, Planner
from services.planner.intake import Intake
from services.planner.observe import Snapshot
from services.planner.parking import Parking
from shared.telemetry.logging import get_logger
from shared.telemetry.metrics import counter, gauge

log = get_logger("shoal.planner")
DESIRED = gauge("shoal_planner_desired_workers", "Workers the planner wants per pool", ["model", "component"])
LIVE = gauge("shoal_planner_live_workers", "Workers live in discovery per pool", ["model", "component"])
DECISIONS = counter("shoal_planner_decisions_total", "Decisions per pool, by action (up, down, hold)",
                    ["model", "component", "action"])
CAPACITY = gauge("shoal_planner_capacity_per_worker", "Tokens/s one worker takes at the targets (profile or "
                 "learnt; 0: unknown)", ["model", "component", "limit"])


class PlanLoop:
    def __init__(self, intake: Intake, planner: Planner, connector: Connector | None, interval_s: float,
                 parking: Parking | None = None) -> None:
        self.intake = intake
        self.parking = parking  # scale from zero (parking.py); None: dry run
        self.planner = planner
        self.connector = connector  # None: dry run
        self.interval_s = interval_s
        self.last: list[Decision] = []

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            await self.step(self.intake.take())

    async def step(self, snap: Snapshot) -> list[Decision]:
        self.last = self.planner.decide(snap, time.monotonic())
        for d in self.last:
            await self._report(d, snap)
            if d.action != HOLD and self.connector is not None:
                reached = d.actual
                if self.connector.handles(d.pool):
                    reached = await self.connector.scale(d.pool, d.actual, d.desired)
                if reached != d.desired:
                    log.warning("pool_not_fully_scaled", model=d.pool.model, component=d.pool.component,
                                desired=d.desired, reached=reached, handled=self.connector.handles(d.pool))
                    self.planner.retarget(d.pool, reached)
        if self.parking is not None:
            try:
                await self.parking.sync()
            except Exception as e:  # parked records are best effort: the sizing goes on
                log.warning("parking_sync_failed", error=repr(e)[:300])
        return self.last

    async def _report(self, d: Decision, snap: Snapshot) -> None:
        labels = (d.pool.model, d.pool.component)
        DESIRED.labels(*labels).set(d.desired)
        LIVE.labels(*labels).set(d.actual)
        DECISIONS.labels(*labels, d.action).inc()
        for limit, cap in d.capacity.items():
            CAPACITY.labels(*labels, limit).set(cap or 0)
        t = snap.traffic_of(d.pool.model)
        event = "planner_decision" if d.action != HOLD else "planner_hold"
        (log.info if d.action != HOLD else log.debug)(
            event, model=d.pool.model, component=d.pool.component, role=d.pool.role, action=d.action,
            live=d.actual, desired=d.desired, reason=d.reason, waiting=d.waiting, dry_run=self.connector is None,
            requests=t.requests, failed=t.failed, ttft_p90_ms=_ms(t.ttft_p90_s), itl_p90_ms=_ms(t.itl_p90_s),
            demand={k: round(v, 1) for k, v in d.demand.items()},
            capacity={k: round(v, 1) if v else None for k, v in d.capacity.items()})


def _ms(s: float | None) -> float | None:
    return None if s is None else round(s * 1000, 1)
