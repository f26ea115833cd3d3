"""Tier weights of the KV router: what a prompt block cached in each tier is worth against recomputing it.

A GPU hit saves the whole prefill of the block (weight 1); a host hit saves it less the reload
(copy host -> GPU), a storage hit less a slower read. The defaults come from the reference engine:
tests/bench/bench_kv_tiers.py measures a prefix's TTFT recomputed, reloaded from host and on GPU, and
weight = (recompute - reload) / (recompute - GPU hit): 0.97-0.98 measured on the reference engine on CPU
(docs/ROUTING_BENCH.md, section 5), hence host=0.95. The reference engine has no storage tier: storage=0.3
is the issue's guess, not a measurement. On a GPU engine (SGLang's HiCache: a PCIe copy against GPU
prefill) the ratio should be measured there and set with --kv-tier-weights.
"""

from __future__ import annotations

from protocol.kv_events import TIERS

DEFAULT_TIER_WEIGHTS = "gpu=1,host=0.95,storage=0.3"
GPU_ONLY = (1.0, 0.0, 0.0)

TierWeights = tuple[float, float, float]  # gpu, host, storage


def parse_tier_weights(text: str) -> TierWeights:
    """`gpu=1,host=0.6,storage=0.3` -> (1.0, 0.6, 0.3); a tier left out weighs 0. ValueError on bad text."""
    out = dict.fromkeys(TIERS, 0.0)
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, value = part.partition("=")
        name = name.strip()
        if not sep or name not in out:
            raise ValueError(f"--kv-tier-weights: {part!r} is not TIER=WEIGHT with TIER one of {', '.join(TIERS)}")
        try:
            w = float(value)
        except ValueError:
            raise ValueError(f"--kv-tier-weights: weight of {name} is not a number: {value!r}") from None
        if not 0.0 <= w <= 1.0:
            raise ValueError(f"--kv-tier-weights: weight of {name} must be in [0, 1], not {w}")
        out[name] = w
    return out["gpu"], out["host"], out["storage"]


def cached_score(depths: tuple[int, int, int], weights: TierWeights) -> float:
    """Weighted cached blocks of one worker from its tier depths (gpu, gpu-or-host, any: shared.kv.radix)."""
    g, gh, a = depths
    return weights[0] * g + weights[1] * (gh - g) + weights[2] * (a - gh)


def tier_weights_flag(text: str) -> str:
    """argparse type of --kv-tier-weights: the text, checked (a bad value is a usage error at start)."""
    try:
        parse_tier_weights(text)
    except ValueError as e:
        import argparse

        raise argparse.ArgumentTypeError(str(e)) from None
    return text
