"""Busy thresholds: under 10x overload the excess gets 503 + Retry-After, the admitted complete, KV stays
bounded; the router service answers all-busy with a typed error."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random

import aiohttp
import nats

from protocol import codec, subjects
from protocol.kv_events import WorkerLoad
from protocol.messages import RouteRequest, RouteResponse
from shared.cluster.procs import spawn
from shared.config.args import NatsOptions
from shared.runtime import EndpointClient, Runtime
from shared.runtime.errors import WorkersBusy
from shared.runtime.publishers import IDLE_REPORT_S

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


def test_the_router_service_answers_all_busy_with_a_typed_error(cluster):
    cluster.worker("--num-blocks", str(BLOCKS), "--page-size", str(PAGE), engine="mock", name="w")
    router = spawn("router", "router", [*cluster.common, "--worker-component", "backend", "--page-size", str(PAGE),
                                        "--active-decode-blocks-threshold", "0.1"], cluster.log_dir)
    cluster.procs.append(router)
    router.wait_ready(60)

    async def scenario() -> tuple[list[str], WorkersBusy, str]:
        rt = await Runtime.connect(NatsOptions(url=cluster.nats.url), cluster.namespace, "test")
        route: EndpointClient[RouteResponse] = EndpointClient(rt, "router", "route", RouteResponse)
        await route.start()
        await route.wait_for_instances(1, 10)

        async def ask(req: RouteRequest) -> str:
            async with contextlib.aclosing(route.generate(req, req.request_id + str(req.finished))) as it:
                async for items in it:
                    return items[0].instance_id
            raise AssertionError("no answer")

        prompt = list(range(3, 103))  # 7 blocks, past 0.1 x 64 as soon as the router knows the worker's size
        admitted: list[str] = []
        try:
            # the worker's size comes with its next load report: an idle worker re-sends it every IDLE_REPORT_S
            for i in range(int((IDLE_REPORT_S + 3) / 0.1)):
                await ask(RouteRequest(f"r{i}", prompt))
                admitted.append(f"r{i}")
                await asyncio.sleep(0.1)
            raise AssertionError("never busy")
        except WorkersBusy as e:
            refused = e
        for rid in admitted:  # the requests end: the worker is free again
            await ask(RouteRequest(rid, finished=True))
        again = await ask(RouteRequest("after", prompt))
        await route.stop()
        await rt.close()
        return admitted, refused, again

    admitted, refused, again = asyncio.run(scenario())
    assert admitted and refused.retry_after == 1.0 and refused.code == "workers_busy"
    assert again
