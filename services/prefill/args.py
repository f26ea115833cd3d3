"""The prefill worker's flags: the decode worker's, in prefill mode, serving component `prefill`."""

from __future__ import annotations

from services.decode.args import WorkerConfig
from services.decode.args import parse as parse_worker


def parse(argv: list[str]) -> WorkerConfig:
    return parse_worker(["--disaggregation-mode", "prefill", *argv])
