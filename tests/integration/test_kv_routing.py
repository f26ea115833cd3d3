"""KV-aware routing on 4 mock workers: far more cache hits than round-robin; a restart replays."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

from tests.bench.loadgen import run as loadgen

WORKER_ARGS = ("--num-blocks", "160", "--speedup-ratio", "200", "--page-size", "16")


def workload(url: str, model: str, seed: int) -> dict:
    args = SimpleNamespace(url=url, model=model, concurrency=2, requests=512, prompt_words=2, max_tokens=4,
                           prefixes=32, prefix_words=60, rate=0.0, timeout=60, api_key=None, seed=seed,
                           label="")
    return asyncio.run(loadgen(args))


def start(cluster, mode: str) -> list:
    workers = [cluster.worker(*WORKER_ARGS, engine="mock", name=f"{mode}-w{i}") for i in range(4)]
    cluster.frontend("--router-mode", mode)
    cluster.wait_models(len(workers))
    return workers


def test_kv_mode_triples_cache_hits_and_survives_restart(cluster):
    rr_workers = start(cluster, "round-robin")
    rr = workload(cluster.url, cluster.model_name, 1)
    for p in [*rr_workers, cluster.procs[-1]]:
        p.stop()
    cluster.procs.clear()

    start(cluster, "kv")
    kv = workload(cluster.url, cluster.model_name, 1)
    assert rr["errors"] == 0 and kv["errors"] == 0
    print("cached fractions: round-robin", rr["cached_frac"], "kv", kv["cached_frac"])
    assert kv["cached_frac"] >= 0.6, (kv["cached_frac"], rr["cached_frac"])  # floors: "no hits at all" fails
    assert kv["cached_frac"] >= rr["cached_frac"] + 0.4, (kv["cached_frac"], rr["cached_frac"])
    assert kv["cached_frac"] >= 3 * rr["cached_frac"], (kv["cached_frac"], rr["cached_frac"])

    cluster.procs[-1].stop()  # the frontend (and the router inside it) restarts: the index is replayed
    cluster.procs.pop()
    cluster.frontend("--router-mode", "kv")
    cluster.wait_models(4)
    again = workload(cluster.url, cluster.model_name, 2)
    assert again["errors"] == 0
    print("after the frontend restart: kv", again["cached_frac"])
    assert again["cached_frac"] >= max(0.6, 0.8 * kv["cached_frac"]), (again["cached_frac"], kv["cached_frac"])
