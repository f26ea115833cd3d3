"""python -m services.planner: parse args -> observe NATS -> decide every interval -> act through a connector."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from services.planner.args import ConnectorOptions, PlannerConfig, parse
from services.planner.capacity import Capacity, load_profile
from services.planner.connectors import Connector
from services.planner.decision import Planner
from services.planner.intake import Intake
from services.planner.loop import PlanLoop
from services.planner.parking import Parking
from shared.runtime.service import Service, run
from shared.runtime.tasks import cancel_and_wait


def _connector(cfg: PlannerConfig) -> Connector | None:
    c: ConnectorOptions = cfg.connector
    if c.dry_run:
        return None
    if c.kind == "kubernetes":
        from services.planner.connectors.kubernetes import KubernetesConnector, apps_api

        return KubernetesConnector(apps_api(), c.k8s_namespace, c.k8s_deployment)
    from services.planner.connectors.local import LocalConnector

    return LocalConnector(cfg.common, c.worker_args, Path(c.log_dir))


async def amain(argv: list[str]) -> None:
    cfg = parse(argv)
    profile = load_profile(cfg.planner.profile) if cfg.planner.profile else None
    connector = _connector(cfg)
    async with Service("planner", cfg.common) as svc:
        intake = Intake(svc.rt)
        await intake.start()
        planner = Planner(cfg.planner, Capacity(profile), act=connector is not None)
        for pool in connector.pools() if connector is not None else []:
            planner.track(pool)
        parking = Parking(svc.rt, intake, planner, connector) if connector is not None else None
        if parking is not None:
            await parking.start()
        loop = PlanLoop(intake, planner, connector, cfg.planner.interval_s, parking)
        svc.set_health(lambda: {"decisions": [f"{d.pool.model}/{d.pool.component}: {d.actual}->{d.desired}"
                                              for d in loop.last]})
        task = asyncio.create_task(loop.run(), name="plan")
        svc.set_ready()
        svc.log.info("planner_ready", connector="dry-run" if connector is None else cfg.connector.kind,
                     ttft_p90_ms=cfg.planner.ttft_p90_ms, itl_p90_ms=cfg.planner.itl_p90_ms,
                     interval_s=cfg.planner.interval_s)
        await svc.stopped()
        svc.set_ready(False)
        await cancel_and_wait(task)
        if parking is not None:
            await parking.stop()
        if connector is not None:
            await connector.close()
        await intake.stop()


def main() -> None:
    run(lambda: amain(sys.argv[1:]))


if __name__ == "__main__":
    main()
