"""A worker's /metrics: requests by outcome, tokens, and the load it publishes for the router."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request

import aiohttp

from tests.metrics import samples, value


def complete(url: str, model: str, prompt: str, n: int) -> dict:
    body = {"model": model, "prompt": prompt, "max_tokens": n, "min_tokens": n}
    req = urllib.request.Request(url + "/v1/completions", json.dumps(body).encode(),
                                 {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())["usage"]


def test_worker_metrics_count_requests_tokens_and_load(cluster):
    w = cluster.worker("--num-blocks", "300", "--speedup-ratio", "2", engine="mock")
    cluster.frontend()
    cluster.wait_models()
    endpoint = {"component": "backend", "endpoint": "generate"}
    usages = [complete(cluster.url, cluster.model_name, "the same prompt, long enough to fill a block or two", 7)
              for _ in range(5)]
    got = samples(w)
    assert value(got, "shoal_endpoint_requests_total", **endpoint, outcome="ok") == 5
    assert value(got, "shoal_endpoint_inflight_requests", **endpoint) == 0
    assert value(got, "shoal_endpoint_request_duration_seconds_count", **endpoint) == 5
    assert value(got, "shoal_worker_tokens_total", kind="output") == 35
    assert value(got, "shoal_worker_tokens_total", kind="prompt") == sum(u["prompt_tokens"] for u in usages)
    cached = sum(u["prompt_tokens_details"]["cached_tokens"] for u in usages)
    assert cached > 0 and value(got, "shoal_worker_tokens_total", kind="cached") == cached

    # a client that leaves mid-stream: the worker counts the request cancelled, and is idle again
    async def leave() -> None:
        body = {"model": cluster.model_name, "prompt": "go on", "max_tokens": 3000, "stream": True}
        async with aiohttp.ClientSession() as s, s.post(cluster.url + "/v1/completions", json=body) as r:
            assert r.status == 200
            async for raw in r.content:
                if raw.startswith(b"data: {"):
                    break
            # still connected: the worker is serving it (load is sampled every 0.2 s)
            busy = samples(w)
            for _ in range(20):
                if value(busy, "shoal_worker_load", component="backend", kind="running") == 1:
                    break
                await asyncio.sleep(0.1)
                busy = samples(w)
            assert value(busy, "shoal_endpoint_inflight_requests", **endpoint) == 1
            assert value(busy, "shoal_worker_load", component="backend", kind="running") == 1

    asyncio.run(leave())
    end = time.monotonic() + 10
    while time.monotonic() < end:
        got = samples(w)
        if value(got, "shoal_endpoint_requests_total", **endpoint, outcome="cancelled") == 1:
            break
        time.sleep(0.1)
    assert value(got, "shoal_endpoint_requests_total", **endpoint, outcome="cancelled") == 1, got
    assert value(got, "shoal_endpoint_inflight_requests", **endpoint) == 0
    while time.monotonic() < end and value(got, "shoal_worker_load", component="backend", kind="running"):
        time.sleep(0.1)
        got = samples(w)
    load = {k: value(got, "shoal_worker_load", component="backend", kind=k)
            for k in ("running", "waiting", "kv_total_blocks")}
    assert load == {"running": 0, "waiting": 0, "kv_total_blocks": 300}
