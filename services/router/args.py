"""The router service's flags."""

from __future__ import annotations

import argparse

import msgspec

from shared.config.args import CommonConfig, add_common_args, common_from_args
from shared.config.yaml_config import expand_or_exit


class RouterConfig(msgspec.Struct, frozen=True):
    common: CommonConfig
    worker_component: str = "backend"
    worker_endpoint: str = "generate"
    component: str = "router"
    page_size: int = 16
    overlap_weight: float = 4.0
    temperature: float = 0.0
    approximate: bool = False


def parse(argv: list[str]) -> RouterConfig:
    p = argparse.ArgumentParser(prog="python -m services.router",
                                description="shoal KV-aware router: picks a worker of a component for callers.")
    add_common_args(p)
    g = p.add_argument_group("router")
    g.add_argument("--worker-component", default="backend", help="the pool routed to (e.g. prefill)")
    g.add_argument("--worker-endpoint", default="generate")
    g.add_argument("--component", default="router", help="this service's own component name")
    g.add_argument("--page-size", type=int, default=16, help="block size of the workers' KV events")
    g.add_argument("--kv-overlap-score-weight", dest="overlap_weight", type=float, default=4.0)
    g.add_argument("--router-temperature", type=float, default=0.0)
    g.add_argument("--no-kv-events", dest="kv_events", action="store_false")
    ns = p.parse_args(expand_or_exit(p, argv))
    return RouterConfig(common=common_from_args(ns), worker_component=ns.worker_component,
                        worker_endpoint=ns.worker_endpoint, component=ns.component, page_size=ns.page_size,
                        overlap_weight=ns.overlap_weight, temperature=ns.router_temperature,
                        approximate=not ns.kv_events)

