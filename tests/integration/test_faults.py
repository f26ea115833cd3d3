"""Nothing lost: migration on worker death, cancellation frees KV, overload answers 429/503."""

from __future__ import annotations

import asyncio
import json
import random
import signal
import time
import urllib.request

import aiohttp
import pytest

from tests.metrics import wait_above
from tests.migration import Streamed, assert_migration_is_invisible


async def stream_text(session: aiohttp.ClientSession, url: str, model: str, prompt: str, n: int,
                      first_chunk: asyncio.Event | None = None, logprobs: bool = False) -> Streamed:
    body = {"model": model, "messages": [{"role": "user", "content": prompt}], "max_tokens": n,
            "min_tokens": n, "temperature": 0, "stream": True, "stream_options": {"include_usage": True},
            "logprobs": logprobs}
    text, usage, rid, tokens = [], {}, "", []
    async with session.post(url + "/v1/chat/completions", json=body) as r:
        assert r.status == 200, await r.text()
        async for raw in r.content:
            if not raw.startswith(b"data: ") or raw.startswith(b"data: [DONE]"):
                continue
            data = json.loads(raw[6:])
            assert "error" not in data, data
            rid = data["id"]
            for ch in data["choices"]:
                text.append(ch["delta"].get("content") or "")
                tokens += [tuple(t["bytes"]) for t in (ch.get("logprobs") or {}).get("content") or []]
                if first_chunk is not None:
                    first_chunk.set()
            usage = data.get("usage") or usage
    return Streamed("".join(text), usage, rid, tuple(tokens))


def health(url: str) -> dict:
    with urllib.request.urlopen(url + "/health", timeout=5) as r:
        return json.loads(r.read())


def test_kill_9_mid_stream_migrates_every_request(cluster):
    a = cluster.worker(engine="reference", name="a")
    b = cluster.worker(engine="reference", name="b")
    front = cluster.frontend("--migration-limit", "2", "--worker-silence-timeout", "2")
    cluster.wait_models(2)
    rng = random.Random(5)
    prompts = [" ".join(rng.choice(["ab", "cd", "ef", "gh"]) for _ in range(rng.randrange(2, 30)))
               for _ in range(32)]
    n = 120

    async def run(kill: bool) -> list[Streamed]:
        async with aiohttp.ClientSession() as s:
            started = [asyncio.Event() for _ in prompts]
            tasks = [asyncio.create_task(stream_text(s, cluster.url, cluster.model_name, p, n, e))
                     for p, e in zip(prompts, started, strict=True)]
            if kill:
                await asyncio.wait_for(asyncio.gather(*(e.wait() for e in started[:8])), 60)
                await asyncio.to_thread(wait_above, a, "shoal_endpoint_inflight_requests", component="backend",
                                        endpoint="generate")
                a.signal(signal.SIGKILL)  # mid-stream: tokens are flowing and `a` holds requests
            return await asyncio.gather(*tasks)

    faulted = assert_migration_is_invisible(cluster, front, run)
    assert all(got.usage["completion_tokens"] == n for got in faulted)
    assert b.alive()


def test_cancelled_requests_leave_no_kv_allocated(cluster):
    # long generations: only cancellation (not completion) can free their blocks within the test
    w = cluster.worker("--num-blocks", "8192", "--speedup-ratio", "2", "--max-num-seqs", "256", engine="mock")
    cluster.frontend()
    cluster.wait_models()

    rng = random.Random(7)
    gate = asyncio.Semaphore(64)

    async def one(s: aiohttp.ClientSession, i: int) -> None:
        body = {"model": cluster.model_name, "messages": [{"role": "user", "content": f"req {i} " * 30}],
                "max_tokens": 3000, "stream": True}
        leave_after = rng.randrange(0, 6)  # chunks read before the client goes away (0: before any)
        async with gate, s.post(cluster.url + "/v1/chat/completions", json=body) as r:
            n = 0
            async for _ in r.content:
                if n >= leave_after:
                    return  # the connection is closed mid-stream
                n += 1

    async def run() -> None:
        conn = aiohttp.TCPConnector(limit=0, force_close=True)
        async with aiohttp.ClientSession(connector=conn, timeout=aiohttp.ClientTimeout(total=60)) as s:
            await asyncio.gather(*(one(s, i) for i in range(1000)))

    asyncio.run(run())
    deadline = time.monotonic() + 2
    while (used := kv_used(w.system_port)) > 0 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert used == 0


def kv_used(system_port: int) -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{system_port}/health", timeout=5) as r:
        return json.loads(r.read())["kv_used_blocks"]


@pytest.mark.parametrize("mode", ["frontend-limit", "worker-queue"])
def test_overload_answers_429_with_retry_after(cluster, mode):
    if mode == "frontend-limit":
        cluster.worker("--speedup-ratio", "20", engine="mock")
        cluster.frontend("--max-inflight", "4")
    else:
        cluster.worker("--speedup-ratio", "20", "--max-num-seqs", "2", "--max-waiting", "2", engine="mock")
        cluster.frontend()
    cluster.wait_models()

    async def one(s: aiohttp.ClientSession) -> tuple[int, str | None]:
        body = {"model": cluster.model_name, "messages": [{"role": "user", "content": "x"}], "max_tokens": 50}
        async with s.post(cluster.url + "/v1/chat/completions", json=body) as r:
            await r.read()
            return r.status, r.headers.get("Retry-After")

    async def run() -> list[tuple[int, str | None]]:
        async with aiohttp.ClientSession() as s:
            return await asyncio.gather(*(one(s) for _ in range(40)))

    results = asyncio.run(run())
    codes = [c for c, _ in results]
    assert 200 in codes and 429 in codes, codes
    assert all(ra is not None for c, ra in results if c == 429)
    assert set(codes) <= {200, 429}
    assert health(cluster.url)["inflight"] == 0
