"""The reference engine through the whole cluster equals transformers' greedy generate."""

from __future__ import annotations

import asyncio
import json
import random
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import nats
import pytest
import torch
from transformers import AutoModelForCausalLM

from protocol import codec, subjects
from protocol.kv_events import BlockStored, KvEventBatch
from shared.tokenizer import Tokenizer
from tests.tap import TokenTap


def complete(url: str, model: str, prompt: list[int], max_tokens: int) -> dict:
    body = {"model": model, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0}
    req = urllib.request.Request(url + "/v1/completions", json.dumps(body).encode(),
                                 {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=120) as r:
        return json.loads(r.read())


def hf_greedy(model_dir, prompts: list[list[int]], n: int) -> list[list[int]]:
    model = AutoModelForCausalLM.from_pretrained(model_dir, torch_dtype=torch.float32).eval()
    out = []
    with torch.no_grad():
        for p in prompts:
            ids = model.generate(torch.tensor([p]), max_new_tokens=n, min_new_tokens=n, do_sample=False,
                                 pad_token_id=0)
            out.append(ids[0, len(p):].tolist())
    return out


@pytest.fixture
def ref_cluster(cluster):
    cluster.worker("--page-size", "16", engine="reference")
    cluster.frontend()
    cluster.wait_models()
    return cluster


def test_greedy_matches_transformers_single_and_concurrent(ref_cluster, tiny_model):
    rng = random.Random(3)
    prompts = [[rng.randrange(256) for _ in range(rng.randrange(3, 90))] for _ in range(16)]
    n = 12
    expected = hf_greedy(tiny_model, prompts, n)
    tok = Tokenizer.from_dir(tiny_model)
    with TokenTap(ref_cluster.nats.url, ref_cluster.namespace) as tap:
        single = complete(ref_cluster.url, ref_cluster.model_name, prompts[0], n)
        assert tap.tokens(single["id"]) == expected[0]
        assert single["choices"][0]["text"] == tok.decode(expected[0])
        with ThreadPoolExecutor(16) as pool:
            results = list(pool.map(lambda p: complete(ref_cluster.url, ref_cluster.model_name, p, n), prompts))
        for got, want in zip(results, expected, strict=True):
            assert tap.tokens(got["id"]) == want  # ids: a wrong token can decode to the same text
            assert got["choices"][0]["text"] == tok.decode(want)
            assert got["usage"]["completion_tokens"] == n


def test_prefix_reuse_reports_cached_tokens_and_kv_events(ref_cluster, tiny_model):
    async def watch_events(stop: asyncio.Event, seen: list) -> None:
        nc = await nats.connect(ref_cluster.nats.url)
        sub = await nc.subscribe(subjects.kv_events_filter(ref_cluster.namespace, "backend"))
        while not stop.is_set():
            try:
                msg = await sub.next_msg(timeout=0.2)
            except nats.errors.TimeoutError:
                continue
            seen.extend(codec.decode(msg.data, KvEventBatch).events)
        await nc.close()

    async def scenario() -> tuple[dict, dict, list]:
        seen: list = []
        stop = asyncio.Event()
        task = asyncio.create_task(watch_events(stop, seen))
        await asyncio.sleep(0.3)
        prompt = [(i * 7) % 250 for i in range(100)]
        first = await asyncio.to_thread(complete, ref_cluster.url, ref_cluster.model_name, prompt, 4)
        second = await asyncio.to_thread(complete, ref_cluster.url, ref_cluster.model_name, prompt, 4)
        await asyncio.sleep(0.5)
        stop.set()
        await task
        return first, second, seen

    first, second, events = asyncio.run(scenario())
    assert first["usage"]["prompt_tokens_details"]["cached_tokens"] == 0
    assert second["usage"]["prompt_tokens_details"]["cached_tokens"] == 96  # 6 full blocks of 16
    assert first["choices"][0]["text"] == second["choices"][0]["text"]
    stored = [h for e in events if isinstance(e, BlockStored) for h in e.block_hashes]
    assert len(stored) >= 6
