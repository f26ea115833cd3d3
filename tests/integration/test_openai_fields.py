"""OpenAI request fields through a real cluster (reference engine): implemented, or a 400 naming them."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

from shared.tokenizer import Tokenizer
from tests.prompt_logprobs import check_prompt_logprobs


def post(url: str, path: str, body: dict) -> tuple[int, bytes]:
    req = urllib.request.Request(url + path, json.dumps(body).encode(), {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def events(raw: bytes) -> list[dict]:
    lines = [ln for ln in raw.decode().split("\n") if ln.startswith("data: ") and ln != "data: [DONE]"]
    return [json.loads(ln[6:]) for ln in lines]


def test_fields(cluster, tiny_model) -> None:
    cluster.worker(engine="reference")
    cluster.frontend()
    cluster.wait_models()
    tok = Tokenizer.from_dir(tiny_model)
    url, model = cluster.url, cluster.model_name
    base = {"model": model, "prompt": "Hello", "max_tokens": 8, "temperature": 0}

    # logit_bias {id: 100}: greedy output is that token, in chat and completions
    z = tok.encode("z")[0]
    status, raw = post(url, "/v1/completions", {**base, "logit_bias": {str(z): 100}})
    assert status == 200 and tok.encode(json.loads(raw)["choices"][0]["text"]) == [z] * 8
    status, raw = post(url, "/v1/chat/completions", {"model": model, "messages": [{"role": "user", "content": "hi"}],
                                                     "max_tokens": 4, "temperature": 0, "logit_bias": {str(z): 100}})
    assert status == 200 and tok.encode(json.loads(raw)["choices"][0]["message"]["content"]) == [z] * 4

    # echo: the prompt, then the same completion as without echo (whole and streamed)
    plain = json.loads(post(url, "/v1/completions", {**base, "logit_bias": {str(z): 100}})[1])["choices"][0]["text"]
    status, raw = post(url, "/v1/completions", {**base, "echo": True, "logit_bias": {str(z): 100}})
    assert status == 200 and json.loads(raw)["choices"][0]["text"] == "Hello" + plain
    status, raw = post(url, "/v1/completions", {**base, "echo": True, "stream": True, "logit_bias": {str(z): 100}})
    assert "".join(e["choices"][0]["text"] for e in events(raw) if e["choices"]) == "Hello" + plain

    # echo with logprobs: the prompt's logprobs (first null) equal transformers' log-softmax; max_tokens 0 scores
    check_prompt_logprobs(url, model, tiny_model)

    # stream_options.continuous_usage_stats: every chunk carries the usage so far
    status, raw = post(url, "/v1/completions", {**base, "stream": True, "stream_options": {
        "include_usage": True, "continuous_usage_stats": True}})
    chunks = events(raw)
    assert all(c["usage"] is not None for c in chunks)
    assert [c["usage"]["completion_tokens"] for c in chunks] == sorted(c["usage"]["completion_tokens"] for c in chunks)
    assert chunks[-1]["usage"]["completion_tokens"] == 8

    # user is accepted (logged, on the trace span)
    assert post(url, "/v1/completions", {**base, "user": "user-42"})[0] == 200

    # refused and unknown fields: 400 with param
    for extra, param in [({"suffix": "x"}, "suffix"), ({"best_of": 2}, "best_of"), ({"frobnicate": 1}, "frobnicate"),
                         ({"logit_bias": {"999999": 5}}, "logit_bias"), ({"max_tokens": 0}, "max_tokens")]:
        status, raw = post(url, "/v1/completions", {**base, **extra})
        assert status == 400 and json.loads(raw)["error"]["param"] == param, (extra, raw)
    status, raw = post(url, "/v1/chat/completions", {"model": model, "messages": [{"role": "user", "content": "hi"}],
                                                     "store": True})
    assert status == 400 and json.loads(raw)["error"]["param"] == "store"


def test_ignore_unknown_fields_drops_them(cluster) -> None:
    cluster.worker()
    cluster.frontend("--ignore-unknown-fields")
    cluster.wait_models()
    status, _ = post(cluster.url, "/v1/completions", {"model": cluster.model_name, "prompt": "hi", "max_tokens": 2,
                                                      "frobnicate": 1})
    assert status == 200
    status, raw = post(cluster.url, "/v1/completions", {"model": cluster.model_name, "prompt": "hi", "echo": True,
                                                        "logprobs": 1})  # the mock engine cannot score a prompt
    assert status == 400 and "does not compute prompt logprobs" in json.loads(raw)["error"]["message"], raw
