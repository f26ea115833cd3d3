"""How much one worker can take while the targets hold: from a profile file, or learnt online.

Two limits per pool: prefill tokens per second per worker (TTFT is what suffers past it) and decode
tokens per second per worker (ITL suffers). An aggregated worker has both; a prefill worker the
first, a decode worker the second.

Online, each interval in which the fleet stood still is a trial: the per-worker rate it carried and
whether the target held. `Bounds` keeps the highest rate seen to hold (`lo`) and the lowest seen to
fail (`hi`) and answers their geometric mean: a bisection that narrows with every trial on either
side. A trial that contradicts a bound replaces it (the workload changed).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from services.planner.observe import Pool

PREFILL_TPS, DECODE_TPS = "prefill_tokens_per_s", "decode_tokens_per_s"
LIMITS = (PREFILL_TPS, DECODE_TPS)


@dataclass
class Bounds:
    lo: float | None = None  # a per-worker rate at which the target held
    hi: float | None = None  # a per-worker rate at which it failed

    def observe(self, rate: float, held: bool) -> None:
        if rate <= 0:
            return
        if held:
            self.lo = max(self.lo or 0.0, rate)
            if self.hi is not None and rate >= self.hi:
                self.hi = None
        else:
            self.hi = min(self.hi or math.inf, rate)
            if self.lo is not None and self.lo >= rate:
                self.lo = rate / 2

    def estimate(self) -> float | None:
        if self.lo is not None and self.hi is not None:
            return math.sqrt(self.lo * self.hi)
        if self.hi is not None:
            return self.hi / 2
        return self.lo


def load_profile(path: str) -> dict[str, dict[str, float]]:
    """`{"MODEL" or "*": {"prefill_tokens_per_s": X, "decode_tokens_per_s": Y}}`: per-worker rates at the
    targets, e.g. measured by a benchmark; "*" is every model without its own entry."""
    data = json.loads(Path(path).read_text())
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a JSON object of models")
    out: dict[str, dict[str, float]] = {}
    for model, limits in data.items():
        unknown = set(limits) - set(LIMITS)
        if unknown:
            raise ValueError(f"{path}: {model}: unknown keys {sorted(unknown)} (known: {list(LIMITS)})")
        out[model] = {k: float(v) for k, v in limits.items()}
    return out


class Capacity:
    """Per pool and limit: the profile's number if it has one, else the online estimate."""

    def __init__(self, profile: dict[str, dict[str, float]] | None = None) -> None:
        self.profile = profile or {}
        self.bounds: dict[tuple[Pool, str], Bounds] = {}

    def per_worker(self, pool: Pool, limit: str) -> float | None:
        fixed = self.profile.get(pool.model, self.profile.get("*", {})).get(limit)
        if fixed is not None:
            return fixed
        b = self.bounds.get((pool, limit))
        return b.estimate() if b else None

    def observe(self, pool: Pool, limit: str, rate: float, held: bool) -> None:
        if rate <= 0:
            return
        self.bounds.setdefault((pool, limit), Bounds()).observe(rate, held)
