"""What the planner decides from: pools of workers, one interval's traffic per model, the pools' load.

Pure data and arithmetic; `intake.py` fills it from NATS.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from protocol.discovery import ModelCard
from protocol.stats import ModelStats
from shared.engine.base import EngineLoad

AGG, PREFILL, DECODE = "aggregated", "prefill", "decode"


@dataclass(frozen=True, order=True)
class Pool:
    """The workers of one model under one component: the unit the planner sizes."""

    model: str
    component: str
    role: str = AGG  # AGG | PREFILL | DECODE


def pool_of(card: ModelCard) -> Pool:
    mode = card.runtime.disaggregation_mode
    role = PREFILL if mode == "prefill" or card.component == "prefill" else DECODE if mode == "decode" else AGG
    return Pool(card.name, card.component, role)


def p90(xs: list[float]) -> float | None:
    """The nearest-rank 90th percentile."""
    if not xs:
        return None
    s = sorted(xs)
    return s[max(0, math.ceil(0.9 * len(s)) - 1)]


@dataclass(frozen=True)
class Traffic:
    """One model over one interval, every frontend together."""

    seconds: float
    requests: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    failed: int = 0
    ttft_p90_s: float | None = None
    itl_p90_s: float | None = None

    @property
    def input_tps(self) -> float:
        return self.input_tokens / self.seconds if self.seconds > 0 else 0.0

    @property
    def output_tps(self) -> float:
        return self.output_tokens / self.seconds if self.seconds > 0 else 0.0


@dataclass
class TrafficWindow:
    """Frontends' stats messages of one model, merged when the interval ends."""

    parts: list[ModelStats] = field(default_factory=list)

    def add(self, s: ModelStats) -> None:
        self.parts.append(s)

    def close(self, seconds: float) -> Traffic:
        ps = self.parts
        return Traffic(seconds, sum(p.requests for p in ps), sum(p.input_tokens for p in ps),
                       sum(p.output_tokens for p in ps), sum(p.failed for p in ps),
                       p90([x for p in ps for x in p.ttft_s]), p90([x for p in ps for x in p.itl_s]))


PoolLoad = EngineLoad  # the last load each live worker of a pool published, summed


@dataclass(frozen=True)
class Snapshot:
    """Everything one decision reads."""

    live: dict[Pool, int]  # pool -> workers in discovery now
    traffic: dict[str, Traffic]  # model -> its interval
    load: dict[Pool, PoolLoad] = field(default_factory=dict)
    seconds: float = 0.0  # the interval's length

    def traffic_of(self, model: str) -> Traffic:
        return self.traffic.get(model) or Traffic(self.seconds)
