"""Thousands of malformed or extreme requests: never a 5xx, never a crash, never a hang."""

from __future__ import annotations

import http.client
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

ALLOWED = {200, 400, 401, 404, 405, 413, 429}

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
roles = st.sampled_from(["user", "system", "assistant", "tool", "robot", ""]) | st.text(max_size=5)
content = st.text(max_size=200) | st.none() | st.integers() | st.lists(
    st.fixed_dictionaries({"type": st.sampled_from(["text", "image_url", "x"]), "text": st.text(max_size=30)}),
    max_size=3)
message = st.fixed_dictionaries({"role": roles, "content": content}) | json_values
numbers = st.integers(-(2**40), 2**40) | st.floats(allow_nan=False, allow_infinity=False) | st.none() | st.text(
    max_size=3)


def chat_bodies(model: str) -> st.SearchStrategy[dict]:
    return st.fixed_dictionaries(
        {"model": st.just(model) | st.text(max_size=10), "messages": st.lists(message, max_size=4) | json_values},
        optional={
            "max_tokens": numbers, "max_completion_tokens": numbers, "temperature": numbers, "top_p": numbers,
            "top_k": numbers, "seed": numbers, "n": numbers, "min_tokens": numbers, "logprobs": json_values,
            "top_logprobs": numbers, "stop": st.text(max_size=4) | st.lists(st.text(max_size=4), max_size=20),
            "stream": st.booleans() | json_values, "stream_options": json_values, "ignore_eos": st.booleans(),
            "presence_penalty": numbers, "stop_token_ids": st.lists(st.integers(-5, 10**6), max_size=3),
        },
    )


def completion_bodies(model: str) -> st.SearchStrategy[dict]:
    prompt = st.text(max_size=100) | st.lists(st.integers(-(2**33), 2**33), max_size=20) | json_values
    return st.fixed_dictionaries({"model": st.just(model), "prompt": prompt},
                                 optional={"max_tokens": numbers, "logprobs": numbers, "echo": json_values})


@pytest.fixture(scope="module")
def api(tmp_path_factory, tiny_model):
    from shared.cluster.natsd import NatsServer
    from tests.conftest import Cluster

    tmp = tmp_path_factory.mktemp("fuzz")
    nats = NatsServer(tmp / "nats").start()
    c = Cluster(nats, tiny_model, tmp / "logs")
    try:
        c.worker("--speedup-ratio", "1000", "--context-length", "2048", engine="mock")
        c.frontend("--max-prompt-tokens", "1024")
        c.wait_models()
        yield c
    finally:
        c.stop()
        nats.stop()


class Conn:
    def __init__(self, port: int) -> None:
        self.port = port
        self.c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)

    def post(self, path: str, body: bytes) -> int:
        try:
            self.c.request("POST", path, body, {"Content-Type": "application/json"})
            r = self.c.getresponse()
            r.read()
            return r.status
        except (http.client.HTTPException, OSError):
            self.c.close()
            self.c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
            raise


def test_fuzz_chat(api):
    conn = Conn(api.http_port)

    @settings(max_examples=1500, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(chat_bodies(api.model_name))
    def check(body: dict) -> None:
        status = conn.post("/v1/chat/completions", json.dumps(body).encode())
        assert status in ALLOWED, (status, body)

    check()


def test_fuzz_completions_and_garbage(api):
    conn = Conn(api.http_port)

    @settings(max_examples=800, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(completion_bodies(api.model_name), st.binary(max_size=64))
    def check(body: dict, junk: bytes) -> None:
        assert conn.post("/v1/completions", json.dumps(body).encode()) in ALLOWED, body
        assert conn.post("/v1/chat/completions", junk) in ALLOWED, junk

    check()
    assert conn.post("/v1/chat/completions", json.dumps({
        "model": api.model_name, "messages": [{"role": "user", "content": "ok"}], "max_tokens": 2}).encode()) == 200
