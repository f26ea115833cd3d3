"""Drain on SIGTERM, API keys, and the OpenAPI document."""

from __future__ import annotations

import asyncio
import json
import signal
import time
import urllib.error
import urllib.request

import aiohttp

from tests.integration.test_faults import health, stream_text


def test_sigterm_on_worker_deregisters_first_and_finishes_streams(cluster):
    w = cluster.worker("--speedup-ratio", "2", engine="mock")
    cluster.frontend()
    cluster.wait_models()

    async def scenario() -> tuple[str, dict, float]:
        async with aiohttp.ClientSession() as s:
            first = asyncio.Event()
            task = asyncio.create_task(stream_text(s, cluster.url, cluster.model_name, "hello", 60, first))
            await first.wait()
            w.signal(signal.SIGTERM)
            t0 = time.monotonic()
            while health(cluster.url)["instances"] and time.monotonic() - t0 < 5:
                await asyncio.sleep(0.05)
            gone_after = time.monotonic() - t0
            text, usage, *_ = await task
            return text, usage, gone_after

    text, usage, gone_after = asyncio.run(scenario())
    assert gone_after < 1.0  # deregistered at once, not at lease expiry
    assert usage["completion_tokens"] == 60 and text  # the in-flight stream finished
    assert w.popen.wait(15) == 0


def test_sigterm_on_frontend_finishes_streams_then_exits(cluster):
    cluster.worker("--speedup-ratio", "2", engine="mock")
    fe = cluster.frontend()
    cluster.wait_models()

    async def scenario() -> dict:
        async with aiohttp.ClientSession() as s:
            first = asyncio.Event()
            task = asyncio.create_task(stream_text(s, cluster.url, cluster.model_name, "hello", 40, first))
            await first.wait()
            fe.signal(signal.SIGTERM)
            usage = (await task).usage
            return usage

    assert asyncio.run(scenario())["completion_tokens"] == 40
    assert fe.popen.wait(15) == 0


def test_api_key_required_when_configured(cluster):
    cluster.worker(engine="mock")
    cluster.frontend("--api-key", "s3cret")
    cluster.wait_models()
    body = json.dumps({"model": cluster.model_name, "messages": [{"role": "user", "content": "x"}],
                       "max_tokens": 2}).encode()

    def call(headers: dict[str, str]) -> int:
        req = urllib.request.Request(cluster.url + "/v1/chat/completions", body,
                                     {"Content-Type": "application/json", **headers})
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.status
        except urllib.error.HTTPError as e:
            return e.code

    assert call({}) == 401
    assert call({"Authorization": "Bearer wrong"}) == 401
    assert call({"Authorization": "Bearer s3cret"}) == 200
    assert "s3cret" not in (cluster.log_dir / "frontend.log").read_text()


def test_openapi_document_describes_the_api(cluster):
    cluster.worker(engine="mock")
    cluster.frontend()
    with urllib.request.urlopen(cluster.url + "/openapi.json", timeout=10) as r:
        doc = json.loads(r.read())
    assert doc["openapi"].startswith("3.")
    assert "/v1/chat/completions" in doc["paths"]
    props = doc["components"]["schemas"]["ChatCompletionRequest"]["properties"]
    assert {"model", "messages", "max_tokens", "stream"} <= set(props)
