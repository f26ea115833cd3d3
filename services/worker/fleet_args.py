"""The simulated fleet's flags (services.worker.fleet), part of the worker's."""

from __future__ import annotations

import argparse

import msgspec


class FleetConfig(msgspec.Struct, frozen=True):
    simulate: int = 0  # workers in this process; 0: one real worker
    churn: float = 0.0  # workers a second that leave, and as many that join
    start_concurrency: int = 32  # workers starting at once


def add_fleet_args(p: argparse.ArgumentParser) -> None:
    d = FleetConfig()
    g = p.add_argument_group("simulated fleet (tests/bench/bench_fleet.py)")
    g.add_argument("--simulate", type=int, default=d.simulate, metavar="N",
                   help="run N simulated workers in this process, each the full worker runtime around its own "
                        "engine (use --engine mock); 0: one worker")
    g.add_argument("--simulate-churn", type=float, default=d.churn, metavar="R",
                   help="with --simulate: R workers a second drain and leave and R new ones join")
    g.add_argument("--simulate-start-concurrency", type=int, default=d.start_concurrency, metavar="K",
                   help="with --simulate: workers starting at once")


def fleet_from_args(ns: argparse.Namespace) -> FleetConfig:
    return FleetConfig(simulate=ns.simulate, churn=ns.simulate_churn, start_concurrency=ns.simulate_start_concurrency)
