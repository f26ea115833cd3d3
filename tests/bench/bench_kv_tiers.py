"""Tier-aware KV routing on the reference engine (real math): hot prefixes overflow GPU blocks into host.

python -m tests.bench.bench_kv_tiers [--runs 3] [--requests 96] [--no-report]

1. The reload/recompute ratio, in process: a prompt's TTFT on a reference engine with a host tier when
   its prefix is not cached (recompute), cached on GPU, and evicted to host (reload). A host block is
   worth w_host = (recompute - reload) / (recompute - gpu) of a GPU block: the measured default of
   --kv-tier-weights (shared/routing/tiers.py).
2. A real nats-server, two reference workers (`--num-blocks` small, `--host-kv-blocks` large), a KV-routing
   frontend, real HTTP, streaming: hot prefixes whose blocks overflow both workers' GPU blocks; each request
   is a random hot prefix plus a fresh suffix. The router scores cached blocks tier-aware (the measured
   weights) or GPU-only (gpu=1,host=0,storage=0: what shoal did before tiers); runs alternate, each on a
   fresh cluster. Cached fraction (usage.prompt_tokens_details.cached_tokens / prompt tokens) and TTFT p50
   per run; exits 1 unless tier-aware beats GPU-only on the median run of both.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from protocol.messages import EngineRequest, SamplingOptions, StopConditions
from shared.engine.reference import ReferenceConfig, ReferenceEngine
from shared.model.tiny import make_tiny
from shared.routing.tiers import parse_tier_weights
from tests.bench.loadgen import percentile
from tests.bench.local_cluster import bench_cluster
from tests.bench.routing_results import save

PS = 16
MODEL = {"hidden_size": 512, "num_layers": 6, "num_heads": 8, "num_kv_heads": 2, "intermediate_size": 1536}
GPU_BLOCKS, HOST_BLOCKS = 64, 512  # per worker
PREFIX_BLOCKS, SUFFIX_TOKENS, MAX_TOKENS = 12, 16, 4
HOT = 14  # 14 x 12 = 168 prefix blocks over 2 x 64 GPU blocks
GPU_ONLY = "gpu=1,host=0,storage=0"


# ---- 1. reload / recompute ------------------------------------------------------------------------------
async def _ttft(eng: ReferenceEngine, rid: str, prompt: list[int]) -> float:
    t0 = time.perf_counter()
    req = EngineRequest(request_id=rid, token_ids=prompt, sampling=SamplingOptions(temperature=0.0),
                        stop=StopConditions(max_tokens=1))
    async for _ in eng.generate(req):
        break
    return time.perf_counter() - t0


async def reload_ratio(model: Path, repeats: int, blocks: int = 32, device: str = "cpu") -> dict[str, Any]:
    """TTFT of a `blocks`-block prompt: recomputed, cached on GPU, reloaded from host (medians)."""
    eng = ReferenceEngine(ReferenceConfig(model_path=str(model), page_size=PS, num_blocks=blocks + 2,
                                          device=device, host_kv_blocks=4 * (blocks + 2), max_batched_tokens=4096))
    await eng.start()
    rng = random.Random(5)
    times: dict[str, list[float]] = {"recompute": [], "gpu": [], "host": []}
    try:
        for i in range(repeats):
            prompt = [rng.randrange(3, 250) for _ in range(blocks * PS + 1)]
            other = [rng.randrange(3, 250) for _ in range(blocks * PS + 1)]
            times["recompute"].append(await _ttft(eng, f"c{i}", prompt))
            times["gpu"].append(await _ttft(eng, f"g{i}", prompt))
            await _ttft(eng, f"o{i}", other)  # takes every GPU block: the prompt's go to host
            times["host"].append(await _ttft(eng, f"h{i}", prompt))
        loaded = eng.pool.host.loaded if eng.pool and eng.pool.host else 0
    finally:
        await eng.stop()
    med = {k: statistics.median(v) * 1000 for k, v in times.items()}
    w_host = (med["recompute"] - med["host"]) / max(1e-9, med["recompute"] - med["gpu"])
    return {"device": device, "prompt_blocks": blocks, "repeats": repeats,
            "ttft_ms": {k: round(v, 2) for k, v in med.items()},
            "host_blocks_reloaded": loaded, "host_weight": round(min(1.0, max(0.0, w_host)), 2)}


# ---- 2. routing on a cluster ----------------------------------------------------------------------------
def workload(n: int, seed: int) -> list[list[int]]:
    rng = random.Random(seed)
    hot = [[rng.randrange(3, 250) for _ in range(PREFIX_BLOCKS * PS)] for _ in range(HOT)]
    warm = [p + [rng.randrange(3, 250) for _ in range(SUFFIX_TOKENS)] for p in hot]  # each prefix once
    return warm + [rng.choice(hot) + [rng.randrange(3, 250) for _ in range(SUFFIX_TOKENS)] for _ in range(n)]


async def _send(s: aiohttp.ClientSession, url: str, prompt: list[int]) -> tuple[float, int]:
    body = {"model": "tiny", "prompt": prompt, "max_tokens": MAX_TOKENS, "stream": True, "temperature": 0,
            "stream_options": {"include_usage": True}}
    t0 = time.perf_counter()
    first, cached = None, -1
    async with s.post(url + "/v1/completions", json=body) as r:
        if r.status != 200:
            raise RuntimeError(f"HTTP {r.status}: {await r.text()}")
        async for line in r.content:
            if not line.startswith(b"data: {"):
                continue
            chunk = json.loads(line[6:])
            if first is None and chunk.get("choices"):
                first = time.perf_counter() - t0
            usage = chunk.get("usage")
            if usage:
                cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens", 0)
    if first is None or cached < 0:
        raise RuntimeError("no token or no usage in the stream")
    return first * 1000, cached


async def drive(url: str, prompts: list[list[int]], warm: int, concurrency: int) -> dict[str, Any]:
    ttfts, cached, total = [], 0, 0
    async with aiohttp.ClientSession() as s:
        for p in prompts[:warm]:  # the hot prefixes land somewhere first (not measured)
            await _send(s, url, p)
        queue = list(prompts[warm:])

        async def client() -> None:
            nonlocal cached, total
            while queue:
                p = queue.pop(0)
                t, c = await _send(s, url, p)
                ttfts.append(t)
                cached += c
                total += len(p)
        await asyncio.gather(*(client() for _ in range(concurrency)))
    return {"requests": len(ttfts), "cached_fraction": round(cached / total, 4),
            "ttft_p50_ms": round(percentile(ttfts, 50) or 0, 1), "ttft_p90_ms": round(percentile(ttfts, 90) or 0, 1)}


def run_arm(work: Path, model: Path, weights: str, prompts: list[list[int]], concurrency: int,
            run: int) -> dict[str, Any]:
    worker = ["--engine", "reference", "--page-size", str(PS), "--num-blocks", str(GPU_BLOCKS),
              "--host-kv-blocks", str(HOST_BLOCKS), "--max-num-batched-tokens", "2048"]
    frontend = ["--router-mode", "kv", "--kv-tier-weights", weights]
    with bench_cluster(work, model, worker, frontend, workers=2, namespace=f"tiers{run}") as c:
        return asyncio.run(drive(c.url, prompts, HOT, concurrency))


def spread(xs: list[float]) -> dict[str, float]:
    return {"min": min(xs), "median": statistics.median(xs), "max": max(xs)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3, help="runs of each arm, alternating")
    ap.add_argument("--requests", type=int, default=96)
    ap.add_argument("--concurrency", type=int, default=1,
                    help="clients; 1: a TTFT is its own prefill, not a wait behind another request")
    ap.add_argument("--ratio-repeats", type=int, default=5)
    ap.add_argument("--no-report", action="store_true")
    ap.add_argument("--ratio-only", metavar="DEVICE", help="only the reload/recompute ratio, on this device "
                    "(cuda: the GPU machine), printed as JSON")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="shoal-tiers-") as tmp:
        work = Path(tmp)
        model = make_tiny(work / "tiny", **MODEL)
        if a.ratio_only:
            print(json.dumps(asyncio.run(reload_ratio(model, a.ratio_repeats, device=a.ratio_only))))
            return
        ratio = asyncio.run(reload_ratio(model, a.ratio_repeats))
        print("reload/recompute", ratio, flush=True)
        aware = f"gpu=1,host={ratio['host_weight']:g},storage={ratio['host_weight'] / 2:g}"
        parse_tier_weights(aware)
        rows: list[dict[str, Any]] = []
        for run in range(a.runs):
            prompts = workload(a.requests, seed=run)
            for arm, weights in (("tier-aware", aware), ("GPU-only", GPU_ONLY)):
                r = run_arm(work, model, weights, prompts, a.concurrency, len(rows))
                rows.append({"run": run, "scoring": arm, "kv_tier_weights": weights, **r})
                print(rows[-1], flush=True)
    by = {arm: [r for r in rows if r["scoring"] == arm] for arm in ("tier-aware", "GPU-only")}
    summary = {arm: {"cached_fraction": spread([r["cached_fraction"] for r in rs]),
                     "ttft_p50_ms": spread([r["ttft_p50_ms"] for r in rs])} for arm, rs in by.items()}
    t, g = summary["tier-aware"], summary["GPU-only"]
    checks = {"tier-aware cached fraction > GPU-only (median run)":
                  t["cached_fraction"]["median"] > g["cached_fraction"]["median"],
              "tier-aware TTFT p50 < GPU-only (median run)": t["ttft_p50_ms"]["median"] < g["ttft_p50_ms"]["median"],
              "host reload faster than recompute": ratio["ttft_ms"]["host"] < ratio["ttft_ms"]["recompute"]}
    result = {"rows": rows, "spread": summary, "reload_vs_recompute": ratio,
              "model": MODEL, "workers": 2, "gpu_blocks_per_worker": GPU_BLOCKS,
              "host_blocks_per_worker": HOST_BLOCKS, "hot_prefixes": f"{HOT} x {PREFIX_BLOCKS} blocks of {PS}",
              "request": f"a hot prefix + {SUFFIX_TOKENS} fresh tokens, {MAX_TOKENS} output tokens, "
                         f"concurrency {a.concurrency}"}
    print(json.dumps({"spread": summary, "checks": checks}, indent=1))
    if not a.no_report:
        save("5_kv_tiers", "5. Tier-aware KV scores: hot prefixes overflowing GPU blocks into the host tier",
             result, checks)
    sys.exit(0 if all(checks.values()) else 1)


if __name__ == "__main__":
    main()
