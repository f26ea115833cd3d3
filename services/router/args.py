"""The router service's flags."""

from __future__ import annotations

import argparse

import msgspec

from protocol.discovery import DEFAULT_PAGE_SIZE
from shared.config.args import CommonConfig, add_common_args, common_from_args
from shared.config.yaml_config import expand_or_exit
from shared.routing.options import ROUTER_FLAGS, RouterOptions


class RouterConfig(msgspec.Struct, frozen=True):
    common: CommonConfig
    worker_component: str = "backend"
    worker_endpoint: str = "generate"
    component: str = "router"
    page_size: int = DEFAULT_PAGE_SIZE
    router: RouterOptions = RouterOptions(mode="kv")


def parse(argv: list[str]) -> RouterConfig:
    p = argparse.ArgumentParser(prog="python -m services.router",
                                description="shoal KV-aware router: picks a worker of a component for callers.")
    add_common_args(p)
    g = p.add_argument_group("router")
    g.add_argument("--worker-component", default="backend", help="the pool routed to (e.g. prefill)")
    g.add_argument("--worker-endpoint", default="generate")
    g.add_argument("--component", default="router", help="this service's own component name")
    g.add_argument("--page-size", type=int, default=DEFAULT_PAGE_SIZE, help="block size of the workers' KV events")
    ROUTER_FLAGS.add_to(p, skip=("mode",))
    ns = p.parse_args(expand_or_exit(p, argv))
    return RouterConfig(common=common_from_args(ns), worker_component=ns.worker_component,
                        worker_endpoint=ns.worker_endpoint, component=ns.component, page_size=ns.page_size,
                        router=ROUTER_FLAGS.build(ns, mode="kv"))

