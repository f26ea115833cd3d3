"""Disaggregated serving on real processes: frontend + prefill + decode, KV moved over NIXL."""

from __future__ import annotations

import asyncio
import json
import random
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import aiohttp
import torch
from transformers import AutoModelForCausalLM

from shared.cluster.natsd import wait_port
from shared.cluster.procs import ServiceProc, spawn
from shared.tokenizer import Tokenizer
from tests.metrics import metric
from tests.tap import TokenTap


def test_disagg_matches_transformers_cancels_cleanly_and_fails_cleanly_without_prefill(cluster, tiny_model):
    prefill, decode = prefill_worker(cluster), decode_worker(cluster)
    ready(cluster, prefill, decode)
    rng = random.Random(11)
    prompts = [[rng.randrange(3, 256) for _ in range(rng.randrange(3, 160))] for _ in range(32)]
    prompts[5] = prompts[4][:40] + prompts[5]  # a shared prefix: only its uncached blocks move
    n = 8
    expected = hf_greedy(tiny_model, prompts, n)
    tok = Tokenizer.from_dir(tiny_model)
    with TokenTap(cluster.nats.url, cluster.namespace) as tap, ThreadPoolExecutor(32) as pool:
        results = list(pool.map(lambda p: complete(cluster.url, cluster.model_name, p, n), prompts))
        for (status, body), want in zip(results, expected, strict=True):
            assert status == 200, body
            assert tap.tokens(body["id"]) == want
            assert body["choices"][0]["text"] == tok.decode(want)
            assert body["usage"]["completion_tokens"] == n
    assert wait_idle(prefill, decode) == [0, 0]

    asyncio.run(cancel_at_random_points(cluster.url, cluster.model_name, count=24))
    assert wait_idle(prefill, decode, timeout=8) == [0, 0]

    prefill.stop()  # no prefill worker left: a clean error, nothing held
    status, body = complete(cluster.url, cluster.model_name, prompts[0], n)
    assert status == 502 and body["error"]["code"] == "transfer_failed", body
    assert wait_idle(decode) == [0]


def test_failed_transfer_frees_both_sides_and_falls_back_when_asked(cluster, tiny_model):
    prefill = prefill_worker(cluster, "--page-size", "8")  # its KV layout cannot match the decode workers'
    strict = decode_worker(cluster, "--page-size", "16", name="strict")
    fallback = decode_worker(cluster, "--page-size", "16", "--disagg-fallback-local", name="fallback")
    ready(cluster, prefill, strict, fallback, frontend_args=("--router-mode", "direct"))
    prompt, n = list(range(3, 90)), 8
    status, body = complete(cluster.url, cluster.model_name, prompt, n, health(strict)["worker_id"])
    assert status == 502 and body["error"]["code"] == "transfer_failed", body
    assert metric(strict, "shoal_endpoint_requests_total", component="backend", endpoint="generate",
                  outcome="transfer_failed") == 1
    assert metric(strict, "shoal_disagg_prefill_failures_total") >= 1
    want = hf_greedy(tiny_model, [prompt], n)[0]
    with TokenTap(cluster.nats.url, cluster.namespace) as tap:
        status, body = complete(cluster.url, cluster.model_name, prompt, n, health(fallback)["worker_id"])
        assert status == 200, body
        assert tap.tokens(body["id"]) == want
    assert body["choices"][0]["text"] == Tokenizer.from_dir(tiny_model).decode(want)
    assert wait_idle(prefill, strict, fallback) == [0, 0, 0]


async def cancel_at_random_points(url: str, model: str, count: int) -> None:
    """Streams that the client leaves before the prefill, during it or the transfer, or mid-decode."""
    rng = random.Random(3)

    async def one(s: aiohttp.ClientSession) -> None:
        prompt = [rng.randrange(3, 256) for _ in range(rng.randrange(100, 500))]
        body = {"model": model, "prompt": prompt, "max_tokens": 400, "min_tokens": 400, "stream": True}
        leave_after, delay = rng.randrange(0, 4), rng.uniform(0.0, 0.3)
        async with s.post(url + "/v1/completions", json=body) as r:
            if leave_after == 0:
                await asyncio.sleep(delay)
                return
            seen = 0
            async for _ in r.content:
                seen += 1
                if seen >= leave_after:
                    return

    conn = aiohttp.TCPConnector(limit=0, force_close=True)
    async with aiohttp.ClientSession(connector=conn, timeout=aiohttp.ClientTimeout(total=60)) as s:
        await asyncio.gather(*(one(s) for _ in range(count)))


# ---- helpers (test_disagg_scaling.py uses them too) -------------------------------------------
SMALL_KV = ("--num-blocks", "4096")


def prefill_worker(cluster, *args: str, name: str = "prefill") -> ServiceProc:
    """Started, not yet ready (start several at once, then `ready(...)`)."""
    p = spawn(name, "prefill", [*cluster.common, "--engine", "reference", "--model-path", str(cluster.model),
                                *SMALL_KV, *args], cluster.log_dir)
    cluster.procs.append(p)
    return p


def decode_worker(cluster, *args: str, name: str = "decode") -> ServiceProc:
    return cluster.worker("--disaggregation-mode", "decode", "--transfer-timeout", "3", *SMALL_KV, *args,
                          engine="reference", name=name, wait=False)


def ready(cluster, *procs: ServiceProc, frontend_args: tuple[str, ...] = ()) -> None:
    """Wait for the workers while the frontend starts too."""
    front = cluster.frontend(*frontend_args, wait=False)
    for p in procs:
        p.wait_ready(120)
    front.wait_ready(60)
    wait_port("127.0.0.1", cluster.http_port)
    cluster.wait_models()


def complete(url: str, model: str, prompt: list[int], max_tokens: int, instance: str | None = None
             ) -> tuple[int, dict]:
    body = {"model": model, "prompt": prompt, "max_tokens": max_tokens, "min_tokens": max_tokens,
            "temperature": 0}
    headers = {"Content-Type": "application/json"}
    if instance is not None:
        headers["x-shoal-instance-id"] = instance
    req = urllib.request.Request(url + "/v1/completions", json.dumps(body).encode(), headers)
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def hf_greedy(model_dir, prompts: list[list[int]], n: int) -> list[list[int]]:
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    out = []
    with torch.no_grad():
        for p in prompts:
            ids = model.generate(torch.tensor([p]), attention_mask=torch.ones(1, len(p), dtype=torch.long),
                                 max_new_tokens=n, min_new_tokens=n, do_sample=False, pad_token_id=0)
            out.append(ids[0, len(p):].tolist())
    return out


def health(proc: ServiceProc) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{proc.system_port}/health", timeout=5) as r:
        return json.loads(r.read())


def kv_used(proc: ServiceProc) -> int:
    return health(proc)["kv_used_blocks"]


def wait_idle(*procs: ServiceProc, timeout: float = 6.0) -> list[int]:
    """KV blocks in use on each worker, once all are 0 or `timeout` passed."""
    end = time.monotonic() + timeout
    while True:
        used = [kv_used(p) for p in procs]
        if not any(used) or time.monotonic() > end:
            return used
        time.sleep(0.1)
