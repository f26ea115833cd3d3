"""nats-server restarts under load: services reconnect, discovery recovers, nothing hangs."""

from __future__ import annotations

import asyncio
import time

import aiohttp

from tests.integration.test_faults import health


async def one(s: aiohttp.ClientSession, url: str, model: str) -> int:
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 30, "stream": True}
    try:
        async with s.post(url + "/v1/chat/completions", json=body) as r:
            if r.status != 200:
                return r.status
            async for raw in r.content:
                if raw.startswith(b"data: {\"error\""):
                    return 502
            return 200
    except aiohttp.ClientError:
        return -1


def test_cluster_recovers_after_nats_restart(cluster):
    cluster.worker("--speedup-ratio", "50", engine="mock")
    cluster.frontend("--request-timeout", "20")
    cluster.wait_models()

    async def load(seconds: float) -> list[int]:
        out: list[int] = []
        end = time.monotonic() + seconds
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as s:
            async def client() -> None:
                while time.monotonic() < end:
                    out.append(await one(s, cluster.url, cluster.model_name))
            await asyncio.gather(*(client() for _ in range(8)))
        return out

    async def scenario() -> tuple[list[int], list[int]]:
        during = asyncio.create_task(load(4))
        await asyncio.sleep(1)
        await asyncio.to_thread(cluster.nats.restart)
        codes = await during
        t0 = time.monotonic()
        while time.monotonic() - t0 < 15:
            if health(cluster.url)["instances"] and await load(0.5) and all(c == 200 for c in await load(1)):
                break
            await asyncio.sleep(0.5)
        return codes, await load(2)

    during, after = asyncio.run(scenario())
    assert set(during) <= {200, 429, 502, 503, 504}, during  # clean errors, no hang past the timeout
    assert after and all(c == 200 for c in after), after
    h = health(cluster.url)
    assert h["instances"] == 1 and h["inflight"] == 0, h  # the worker rediscovered, no request left hanging
