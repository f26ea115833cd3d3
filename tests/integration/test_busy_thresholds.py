"""Busy thresholds under 10x overload: the excess gets 503 + Retry-After, the admitted complete, KV stays bounded."""

from __future__ import annotations

import asyncio
import json
import random

import aiohttp
import nats

from protocol import codec, subjects
from protocol.kv_events import WorkerLoad

BLOCKS, PAGE, THRESHOLD = 64, 16, 0.5
PROMPT_TOKENS, MAX_TOKENS = 170, 16
REQUEST_BLOCKS = -(-(PROMPT_TOKENS + MAX_TOKENS) // PAGE)  # 12: one request's blocks, output included
CAPACITY = 2 * 3  # two workers; each takes requests while at or under 32 blocks: 0, 11, 22 -> 33
# slow decode (25 ms a step) so the admitted requests still run while the storm arrives
WORKER_ARGS = ("--num-blocks", str(BLOCKS), "--page-size", str(PAGE), "--speedup-ratio", "0.2")


async def storm(url: str, model: str, n: int) -> list[tuple[int, str | None, dict]]:
    rng = random.Random(0)

    async def one(s: aiohttp.ClientSession) -> tuple[int, str | None, dict]:
        prompt = [rng.randrange(3, 250) for _ in range(PROMPT_TOKENS)]  # no two share cached blocks
        body = {"model": model, "prompt": prompt, "max_tokens": MAX_TOKENS, "min_tokens": MAX_TOKENS}
        async with s.post(url + "/v1/completions", json=body) as r:
            return r.status, r.headers.get("Retry-After"), json.loads(await r.read())

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as s:
        return await asyncio.gather(*(one(s) for _ in range(n)))


async def retry_until_admitted(url: str, model: str, tries: int = 10) -> int:
    """As a client should: after a 503, wait Retry-After and send again (the workers' next reports free them)."""
    for _ in range(tries):
        code, retry_after, _ = (await storm(url, model, 1))[0]
        if code != 503:
            return code
        await asyncio.sleep(float(retry_after or 1))
    return code


async def overload(cluster) -> tuple[list[tuple[int, str | None, dict]], dict[str, int], int]:
    peak: dict[str, int] = {}
    nc = await nats.connect(cluster.nats.url)

    async def on_load(msg) -> None:
        ld = codec.decode(msg.data, WorkerLoad)
        peak[ld.worker_id] = max(peak.get(ld.worker_id, 0), ld.kv_used_blocks)

    await nc.subscribe(subjects.load_filter(cluster.namespace), cb=on_load)
    try:
        results = await storm(cluster.url, cluster.model_name, 10 * CAPACITY)
        after = await retry_until_admitted(cluster.url, cluster.model_name)
    finally:
        await nc.close()
    return results, peak, after


def test_overload_is_answered_503_and_kv_stays_within_threshold_plus_one_request(cluster):
    for i in range(2):
        cluster.worker(*WORKER_ARGS, engine="mock", name=f"w{i}")
    cluster.frontend("--router-mode", "kv", "--active-decode-blocks-threshold", str(THRESHOLD))
    cluster.wait_models(2)

    results, peak, after = asyncio.run(overload(cluster))
    codes = [c for c, _, _ in results]
    assert set(codes) <= {200, 503}, codes
    assert codes.count(503) >= len(codes) // 2, codes  # most of the 10x excess is refused, not queued
    assert codes.count(200) >= CAPACITY, codes
    for code, retry_after, body in results:
        if code == 503:
            assert retry_after is not None and body["error"]["code"] == "workers_busy", body
        else:  # every admitted request ran to its end
            assert body["usage"]["completion_tokens"] == MAX_TOKENS, body
    assert after == 200
    assert len(peak) == 2 and max(peak.values()) > 0, peak
    bound = THRESHOLD * BLOCKS + REQUEST_BLOCKS
    assert all(used <= bound for used in peak.values()), (peak, bound)
