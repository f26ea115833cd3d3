"""Each flag is defined once (a flag group) and means the same in every service that takes it."""

from __future__ import annotations

import argparse

import msgspec
import pytest

from services.frontend.args import parse as parse_frontend
from services.processor.args import parse as parse_processor
from services.router.args import parse as parse_router
from shared.config.flags import FlagGroup, flag
from shared.routing.options import RouterOptions

ROUTER_ARGV = ["--kv-overlap-score-weight", "2.5", "--router-temperature", "0.3", "--no-kv-events"]


def test_the_router_flags_mean_the_same_in_frontend_processor_and_router_service():
    want = RouterOptions(mode="kv", overlap_weight=2.5, temperature=0.3, kv_events=False)
    assert parse_frontend(["--router-mode", "kv", *ROUTER_ARGV]).router == want
    assert parse_processor(["--model-path", "/m", "--router-mode", "kv", *ROUTER_ARGV]).router == want
    assert parse_router(ROUTER_ARGV).router == want


def test_unset_router_flags_take_the_structs_defaults():
    assert parse_frontend([]).router == RouterOptions()
    assert parse_processor(["--model-path", "/m"]).router == RouterOptions()
    assert parse_router([]).router == RouterOptions(mode="kv")


class Knobs(msgspec.Struct, frozen=True):
    size: int = 16
    weight: float | None = None
    on: bool = True
    name: str = "x"


def test_a_flag_group_types_defaults_switches_and_skips_from_the_struct():
    group = FlagGroup("knobs", Knobs, flag("size", "--size"), flag("weight", "--weight"),
                      flag("on", "--no-on"), flag("name", "--name", choices=("x", "y")))
    p = argparse.ArgumentParser()
    group.add_to(p, skip=("name",), defaults={"size": 32})
    assert group.build(p.parse_args([])) == Knobs(size=32)
    assert group.build(p.parse_args(["--size", "8", "--weight", "0.5", "--no-on"])) == Knobs(8, 0.5, False)
    with pytest.raises(SystemExit):
        p.parse_args(["--name", "y"])  # skipped: not a flag of this parser
    with pytest.raises(TypeError):
        FlagGroup("bad", Knobs, flag("nope", "--nope"))
