"""The planner's flags: SLA targets, pacing, fleet limits and the connector that acts."""

from __future__ import annotations

import argparse

import msgspec

from shared.config.args import CommonConfig, add_common_args, common_from_args
from shared.config.flags import FlagGroup, flag
from shared.config.yaml_config import expand_or_exit

CONNECTORS = ("local", "kubernetes")


class PlannerOptions(msgspec.Struct, frozen=True):
    """What the decision needs (services/planner/decision.py)."""

    ttft_p90_ms: float = 500.0
    itl_p90_ms: float = 50.0
    interval_s: float = 5.0
    min_workers: int = 1
    max_workers: int = 8
    prefill_min_workers: int = 1
    prefill_max_workers: int = 8
    scale_down_intervals: int = 3
    min_requests: int = 5  # fewer requests in an interval teach the capacity model nothing
    settle_s: float = 120.0  # a scale-up not seen in discovery after this long is given up on
    scale_to_zero_idle_s: float = 0.0  # with --min-workers 0: drain the last worker after this long idle (0: off)
    profile: str | None = None


class ConnectorOptions(msgspec.Struct, frozen=True):
    kind: str = "local"
    dry_run: bool = False
    worker_args: list[str] = []  # local: one pool's worker flags each (after --nats-url and --namespace)
    log_dir: str = ".shoal/logs"  # local: where its workers' logs go
    k8s_namespace: str = "default"
    k8s_deployment: str = "{model}-{component}"


PLANNER_FLAGS = FlagGroup(
    "planner", PlannerOptions,
    flag("ttft_p90_ms", "--ttft-p90-ms", metavar="MS", help="target: 90th percentile of time to first token"),
    flag("itl_p90_ms", "--itl-p90-ms", metavar="MS",
         help="target: 90th percentile of a request's mean inter-token latency"),
    flag("interval_s", "--interval", metavar="S", help="seconds between decisions (one window of observations)"),
    flag("min_workers", "--min-workers", metavar="N", help="aggregated or decode workers per model, at least"),
    flag("max_workers", "--max-workers", metavar="N", help="aggregated or decode workers per model, at most"),
    flag("prefill_min_workers", "--prefill-min-workers", metavar="N", help="prefill workers per model, at least"),
    flag("prefill_max_workers", "--prefill-max-workers", metavar="N", help="prefill workers per model, at most"),
    flag("scale_down_intervals", "--scale-down-intervals", metavar="N",
         help="scale down only after this many intervals in a row all wanted fewer workers"),
    flag("min_requests", "--min-requests", metavar="N",
         help="intervals with fewer requests do not teach the capacity model"),
    flag("settle_s", "--settle-s", metavar="S",
         help="seconds a scale-up may take to show in discovery before the next"),
    flag("scale_to_zero_idle_s", "--scale-to-zero-idle", metavar="S",
         help="with --min-workers 0: drain a pool's last worker once it saw no request for S seconds (its model "
              "stays listed, parked; a request starts a worker again); 0: off"),
    flag("profile", "--profile", metavar="FILE",
         help="per-worker capacity (JSON: prefill/decode tokens per second at the targets); "
              "default: measured online"),
)

CONNECTOR_FLAGS = FlagGroup(
    "connector", ConnectorOptions,
    flag("kind", "--connector", choices=CONNECTORS, help="local: start and drain worker processes; "
         "kubernetes: set a Deployment's replicas (scale subresource)"),
    flag("dry_run", "--dry-run", help="decide and report, change nothing"),
    flag("worker_args", "--worker-args", metavar="ARGS", action="append",
         help="local: a worker's flags, one string (engine, model, ...); once per pool it sizes (e.g. the "
              "prefill and the decode workers of a disaggregated model)"),
    flag("log_dir", "--worker-log-dir", metavar="DIR", help="local: the workers' log folder"),
    flag("k8s_namespace", "--k8s-namespace", metavar="NS", help="kubernetes: the Deployments' namespace"),
    flag("k8s_deployment", "--k8s-deployment", metavar="TEMPLATE",
         help="kubernetes: Deployment name of a pool; {model} and {component} are filled in (made DNS-safe)"),
)


class PlannerConfig(msgspec.Struct, frozen=True):
    common: CommonConfig
    planner: PlannerOptions = PlannerOptions()
    connector: ConnectorOptions = ConnectorOptions()


def parse(argv: list[str]) -> PlannerConfig:
    p = argparse.ArgumentParser(prog="python -m services.planner",
                                description="shoal planner: sizes each model's workers to TTFT/ITL targets.")
    add_common_args(p)
    PLANNER_FLAGS.add_to(p)
    CONNECTOR_FLAGS.add_to(p)
    ns = p.parse_args(expand_or_exit(p, argv))
    conn = CONNECTOR_FLAGS.build(ns)
    if min(ns.__dict__[PLANNER_FLAGS.dest("min_workers")], ns.__dict__[PLANNER_FLAGS.dest("prefill_min_workers")]) < 0:
        p.error("--min-workers and --prefill-min-workers must be >= 0")
    if conn.kind == "local" and not conn.dry_run and not conn.worker_args:
        p.error("--connector local needs --worker-args (the flags of the workers it starts)")
    return PlannerConfig(common=common_from_args(ns), planner=PLANNER_FLAGS.build(ns),
                         connector=conn)
