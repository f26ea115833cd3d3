"""LoRA adapters through the whole cluster: static and run-time adapters, batched with the base model."""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from shared.tokenizer import Tokenizer
from tests.integration.test_embeddings import post
from tests.lora_adapters import make_adapter, merged_greedy

N = 10  # new tokens per request
LONG = 80  # tokens of the requests that stream while adapters load and unload


@pytest.fixture(scope="module")
def adapters(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("adapters")
    return {name: make_adapter(tiny_model, d / name, seed=i + 1) for i, name in enumerate(("a", "b", "c"))}


def models(url: str) -> dict[str, str | None]:
    with urllib.request.urlopen(url + "/v1/models", timeout=5) as r:
        return {m["id"]: m.get("parent") for m in json.loads(r.read())["data"]}


def complete(url: str, model: str, prompt: list[int], n: int = N) -> dict:
    status, body = post(url + "/v1/completions", {"model": model, "prompt": prompt, "max_tokens": n,
                                                   "temperature": 0, "ignore_eos": True})
    assert status == 200, body
    return body


def chat_tokens(url: str, model: str, text: str) -> list[str]:
    """Each greedy reply token as logprobs shows it (the token id decoded alone; the frontend has no id field)."""
    status, body = post(url + "/v1/chat/completions", {
        "model": model, "messages": [{"role": "user", "content": text}], "max_tokens": N, "temperature": 0,
        "ignore_eos": True, "logprobs": True})
    assert status == 200, body
    return [e["token"] for e in body["choices"][0]["logprobs"]["content"]]


ADMIN_KEY = "lora-admin-key"


def admin_post(url: str, body: dict) -> tuple[int, dict]:
    req = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json",
                                                                  "Authorization": f"Bearer {ADMIN_KEY}"})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


@pytest.fixture
def lora_cluster(cluster, adapters, monkeypatch):
    cluster.worker("--enable-lora", "--lora-paths", f"a={adapters['a']}", f"b={adapters['b']}",
                   "--num-blocks", "512", "--enable-lora-runtime-updates", "--lora-root", str(adapters["a"].parent),
                   engine="reference")
    monkeypatch.setenv("SHOAL_ADMIN_API_KEY", ADMIN_KEY)
    cluster.frontend("--router-mode", "kv", "--enable-lora-runtime-updates")
    cluster.wait_models()
    return cluster


def test_base_and_both_adapters_in_one_batch_equal_peft(lora_cluster, tiny_model, adapters):
    url = lora_cluster.url
    assert models(url) == {"tiny": None, "a": "tiny", "b": "tiny"}
    tok = Tokenizer.from_dir(tiny_model)
    texts = [f"prompt {i}: " + "xyz"[: i % 3 + 1] * (i + 1) for i in range(12)]
    names = ["tiny", "a", "b", "tiny", "tiny:a", "tiny:b"] * 2
    with ThreadPoolExecutor(12) as pool:
        got = list(pool.map(lambda i: chat_tokens(url, names[i], texts[i]), range(12)))
    prompts = [tok.encode(tok.apply_chat_template([{"role": "user", "content": t}])) for t in texts]
    for lora in ("", "a", "b"):
        rows = [i for i in range(12) if names[i].rpartition(":")[2].replace("tiny", "") == lora]
        want = merged_greedy(tiny_model, adapters[lora] if lora else None, [prompts[i] for i in rows], N)
        assert [got[i] for i in rows] == [[tok.decode([t], skip_special_tokens=False) for t in w] for w in want]
    assert got[0] != got[1] != got[2]


def test_a_prompt_cached_under_one_adapter_is_not_cached_under_another(lora_cluster):
    prompt = [(5 * j) % 250 + 1 for j in range(80)]
    cached = [complete(lora_cluster.url, m, prompt, n=2)["usage"].get("prompt_tokens_details", {})
              .get("cached_tokens", 0) for m in ("a", "b", "tiny", "a")]
    assert cached[:3] == [0, 0, 0] and cached[3] == 64


def test_load_and_unload_at_run_time_while_requests_stream(lora_cluster, adapters):
    url = lora_cluster.url
    results: list[tuple[str, int, int]] = []
    started = threading.Barrier(5, timeout=120)

    def stream(model: str) -> None:
        req = urllib.request.Request(url + "/v1/completions", json.dumps({
            "model": model, "prompt": [1, 2, 3], "max_tokens": LONG, "temperature": 0, "ignore_eos": True,
            "stream": True, "stream_options": {"include_usage": True}}).encode(), {"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=300) as r:
            chunks = [r.readline()]
            started.wait()  # every stream is under way before adapters change
            chunks += r.read().splitlines()
        usage = [json.loads(c[6:])["usage"] for c in chunks if c.startswith(b"data: {") and b'"usage"' in c]
        results.append((model, r.status, usage[-1]["completion_tokens"] if usage else 0))

    streams = [threading.Thread(target=stream, args=(m,)) for m in ("tiny", "a", "a", "b")]
    for t in streams:
        t.start()
    started.wait()
    status, body = admin_post(url + "/v1/load_lora_adapter", {"lora_name": "c", "lora_path": str(adapters["c"])})
    assert status == 200 and "c" in body["loaded_adapters"], body
    assert models(url)["c"] == "tiny"
    assert complete(url, "c", [4, 5, 6])["usage"]["completion_tokens"] == N
    status, body = admin_post(url + "/v1/unload_lora_adapter", {"lora_name": "a"})  # waits for the two streams on a
    assert status == 200 and "a" not in body["loaded_adapters"], body
    assert "a" not in models(url)
    status, err = post(url + "/v1/completions", {"model": "a", "prompt": "x", "max_tokens": 2})
    assert status == 404, err
    for t in streams:
        t.join(300)
    assert sorted(results) == sorted([(m, 200, LONG) for m in ("tiny", "a", "a", "b")])
    status, err = admin_post(url + "/v1/load_lora_adapter", {"lora_name": "d", "lora_path": "/no/such/adapter"})
    assert status == 400 and "d" not in models(url), err
