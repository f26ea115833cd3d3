"""The histograms users chart move under traffic: inter-token latency, input and output length and request
duration by outcome on the frontend; prefix-cache hit ratio and queue wait on the worker."""

from __future__ import annotations

import asyncio
import time

import aiohttp

from tests.integration.test_worker_metrics import complete, samples, value

PROMPT = "the same prompt, long enough to fill a block or two"


def test_traffic_moves_the_charted_histograms(cluster):
    w = cluster.worker("--speedup-ratio", "4", engine="mock")
    fe = cluster.frontend()
    cluster.wait_models()
    model = cluster.model_name
    usages = [complete(cluster.url, model, PROMPT, n) for n in (5, 9, 12)]

    got = samples(fe)
    isl, osl = "shoal_frontend_input_sequence_tokens", "shoal_frontend_output_sequence_tokens"
    assert value(got, isl + "_count", model=model) == 3
    assert value(got, isl + "_sum", model=model) == sum(u["prompt_tokens"] for u in usages)
    assert value(got, osl + "_count", model=model) == 3
    assert value(got, osl + "_sum", model=model) == 5 + 9 + 12
    itl = value(got, "shoal_frontend_inter_token_latency_seconds_count", model=model)
    assert 0 < itl <= 4 + 8 + 11  # every token but each request's first batch has a gap before it
    assert value(got, "shoal_frontend_inter_token_latency_seconds_sum", model=model) > 0
    duration = "shoal_frontend_request_duration_seconds_count"
    assert value(got, duration, model=model, outcome="ok") == 3

    # a client that leaves mid-stream: its request ends as cancelled, and its length is not counted
    async def leave() -> None:
        body = {"model": model, "prompt": "go on", "max_tokens": 3000, "stream": True}
        async with aiohttp.ClientSession() as s, s.post(cluster.url + "/v1/completions", json=body) as r:
            async for raw in r.content:
                if raw.startswith(b"data: {"):
                    break

    asyncio.run(leave())
    end = time.monotonic() + 10
    while time.monotonic() < end and not value(samples(fe), duration, model=model, outcome="cancelled"):
        time.sleep(0.1)
    got = samples(fe)
    assert value(got, duration, model=model, outcome="cancelled") == 1
    assert value(got, osl + "_count", model=model) == 3

    worker = samples(w)
    hits = "shoal_worker_prefix_cache_hit_ratio"
    assert value(worker, hits + "_count") == 3
    cached = sum(u["prompt_tokens_details"]["cached_tokens"] / u["prompt_tokens"] for u in usages)
    assert cached > 0 and abs(value(worker, hits + "_sum") - cached) < 1e-9
    assert value(worker, "shoal_worker_queue_wait_seconds_count") == 4  # the three and the one that left
