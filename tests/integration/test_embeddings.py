"""Embeddings through real processes: nats-server, embedding and chat workers, the frontend, the OpenAI client."""

from __future__ import annotations

import asyncio
import base64
import json
import signal
import struct
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import openai
import torch
from transformers import LlamaForCausalLM

from shared.tokenizer import Tokenizer
from tests.metrics import metric, wait_above


def post(url: str, body: dict) -> tuple[int, dict]:
    req = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def wait_listed(url: str, names: set[str], timeout: float = 30.0) -> set[str]:
    end = time.monotonic() + timeout
    listed: set[str] = set()
    while time.monotonic() < end:
        with urllib.request.urlopen(url + "/v1/models", timeout=5) as r:
            listed = {m["id"] for m in json.loads(r.read())["data"]}
        if names <= listed:
            return listed
        time.sleep(0.1)
    raise TimeoutError(f"the frontend lists {sorted(listed)}, not {sorted(names)}")


def client_for(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=url + "/v1", api_key="none", max_retries=0, timeout=60)


def test_reference_embeddings_through_the_cluster_equal_transformers(cluster, tiny_model):
    cluster.worker("--num-blocks", "64", engine="reference", service="embedding")  # python -m services.embedding
    cluster.frontend()
    wait_listed(cluster.url, {cluster.model_name})
    texts = ["a", "bb"]
    tok = Tokenizer.from_dir(tiny_model)
    hf = LlamaForCausalLM.from_pretrained(tiny_model, dtype=torch.float32).eval()
    want = []
    with torch.no_grad():
        for t in texts:
            h = hf.model(input_ids=torch.tensor([tok.encode(t, add_special_tokens=True)])).last_hidden_state[0, -1]
            want.append(torch.nn.functional.normalize(h, dim=-1))

    client = client_for(cluster.url)
    got = client.embeddings.create(model=cluster.model_name, input=texts, encoding_format="float")
    assert [d.index for d in got.data] == [0, 1] and got.model == cluster.model_name
    for d, w in zip(got.data, want, strict=True):
        assert torch.allclose(torch.tensor(d.embedding), w, atol=1e-4)
    assert got.usage.prompt_tokens == got.usage.total_tokens == 3
    default = client.embeddings.create(model=cluster.model_name, input=texts)  # the client asks for base64
    assert [d.embedding for d in default.data] == [d.embedding for d in got.data]

    status, b64 = post(cluster.url + "/v1/embeddings", {"model": cluster.model_name, "input": texts,
                                                        "encoding_format": "base64"})
    assert status == 200
    for d, f in zip(b64["data"], got.data, strict=True):
        raw = base64.b64decode(d["embedding"])
        assert list(struct.unpack(f"<{len(raw) // 4}f", raw)) == f.embedding

    status, err = post(cluster.url + "/v1/embeddings", {"model": cluster.model_name, "input": "a" * 5000})
    assert status == 400 and err["error"]["code"] == "context_length_exceeded"


def test_chat_and_embedding_models_side_by_side_refuse_each_others_routes(cluster):
    cluster.worker("--served-model-name", "chatty", engine="mock")
    cluster.worker("--served-model-name", "embeddy", "--embedding", engine="mock")
    cluster.frontend()
    assert wait_listed(cluster.url, {"chatty", "embeddy"}) == {"chatty", "embeddy"}
    client = client_for(cluster.url)

    emb = client.embeddings.create(model="embeddy", input=["x", "y", "x"], encoding_format="float")
    vecs = [d.embedding for d in emb.data]
    assert len(vecs[0]) == 64 and vecs[0] == vecs[2] and vecs[0] != vecs[1]
    chat = client.chat.completions.create(model="chatty", messages=[{"role": "user", "content": "hi"}], max_tokens=3)
    assert chat.usage.completion_tokens == 3

    status, err = post(cluster.url + "/v1/embeddings", {"model": "chatty", "input": "x"})
    assert status == 400 and err["error"]["code"] == "model_not_embedding", err
    for path, body in (("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}]}),
                       ("/v1/completions", {"prompt": "hi"})):
        status, err = post(cluster.url + path, {"model": "embeddy", **body})
        assert status == 400 and err["error"]["code"] == "model_not_generative", err
    status, err = post(cluster.url + "/v1/embeddings", {"model": "embeddy", "input": "x", "dimensions": 32})
    assert status == 400 and err["error"]["param"] == "dimensions"


def test_embedding_worker_killed_mid_request_loses_no_request(cluster):
    # slow mock embeddings (about 1 s per request) so that requests are in flight at the kill
    slow = ("--prefill-ms-per-token", "300")
    a = cluster.worker(*slow, "--served-model-name", "embeddy", engine="mock", service="embedding", name="a")
    b = cluster.worker(*slow, "--served-model-name", "embeddy", engine="mock", service="embedding", name="b")
    front = cluster.frontend("--worker-silence-timeout", "2")
    wait_listed(cluster.url, {"embeddy"})
    texts = [f"text {i}" for i in range(8)]  # 6 tokens each with BOS/EOS: ~1.8 s per request
    client = client_for(cluster.url)
    want = [client.embeddings.create(model="embeddy", input=t, encoding_format="float").data[0].embedding
            for t in texts[:1]]

    async def run() -> list[tuple[int, dict]]:
        loop = asyncio.get_running_loop()
        pool = ThreadPoolExecutor(len(texts))
        calls = [loop.run_in_executor(pool, post, cluster.url + "/v1/embeddings",
                                      {"model": "embeddy", "input": t, "encoding_format": "float"}) for t in texts]
        await asyncio.to_thread(wait_above, a, "shoal_endpoint_inflight_requests", component="embedding",
                                endpoint="embed")
        a.signal(signal.SIGKILL)  # while it computes a request
        return list(await asyncio.gather(*calls))

    answers = asyncio.run(run())
    for status, body in answers:
        assert status == 200, body
    assert answers[0][1]["data"][0]["embedding"] == want[0]  # the same vector, whichever worker made it
    assert b.alive() and not a.alive()
    moved = [metric(front, f"shoal_frontend_{kind}_total", model="embeddy") for kind in ("migrations", "retries")]
    assert sum(moved) >= 1, moved  # the kill did catch a request: it was sent again
