"""The user's story: an OpenAI client against a real cluster (nats-server, worker, frontend)."""

from __future__ import annotations

import json
import signal
import time
import urllib.error
import urllib.request

import openai
import pytest


def post(url: str, body: bytes | dict, headers: dict[str, str] | None = None) -> tuple[int, dict]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    req = urllib.request.Request(url, data, {"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


@pytest.fixture
def running(cluster):
    cluster.worker(engine="mock")
    cluster.frontend()
    cluster.wait_models()
    return cluster


def client_for(c) -> openai.OpenAI:
    return openai.OpenAI(base_url=c.url + "/v1", api_key="none", max_retries=0, timeout=30)


def test_openai_client_chat_stream_and_not_and_completion(running):
    client = client_for(running)
    msgs = [{"role": "user", "content": "Hello there"}]
    whole = client.chat.completions.create(model=running.model_name, messages=msgs, max_tokens=12)
    assert whole.choices[0].finish_reason == "length"
    assert whole.usage.completion_tokens == 12 and whole.usage.prompt_tokens > 0
    text = whole.choices[0].message.content
    assert text

    pieces, usage = [], None
    for chunk in client.chat.completions.create(model=running.model_name, messages=msgs, max_tokens=12,
                                                stream=True, stream_options={"include_usage": True}):
        if chunk.choices:
            pieces.append(chunk.choices[0].delta.content or "")
        if chunk.usage:
            usage = chunk.usage
    assert "".join(pieces) == text  # same deterministic output streamed
    assert usage.completion_tokens == 12

    comp = client.completions.create(model=running.model_name, prompt="Once upon", max_tokens=5)
    assert comp.usage.completion_tokens == 5 and comp.choices[0].text


def test_models_lists_the_model(running):
    models = client_for(running).models.list()
    assert [m.id for m in models.data] == [running.model_name]


def test_stop_string_ends_the_stream(running):
    client = client_for(running)
    msgs = [{"role": "user", "content": "Hello there"}]
    full = client.chat.completions.create(model=running.model_name, messages=msgs, max_tokens=20)
    text = full.choices[0].message.content
    stop = text[5:7]
    cut = client.chat.completions.create(model=running.model_name, messages=msgs, max_tokens=20, stop=[stop])
    assert cut.choices[0].finish_reason == "stop"
    assert cut.choices[0].message.content == text[: text.index(stop)]


@pytest.mark.parametrize("body,status", [
    (b"{not json", 400),
    ({"model": "tiny", "messages": "hi"}, 400),
    ({"model": "tiny", "messages": [{"role": "user", "content": "x"}], "temperature": "hot"}, 400),
    ({"model": "nope", "messages": [{"role": "user", "content": "x"}]}, 404),
    ({"model": "tiny", "messages": [{"role": "user", "content": "x"}], "max_tokens": 10_000_000}, 400),
    ({"model": "tiny", "messages": [{"role": "user", "content": "x"}], "n": 17}, 400),
])
def test_bad_requests_get_openai_errors_and_server_keeps_serving(running, body, status):
    if isinstance(body, dict) and body.get("model") == "tiny":
        body["model"] = running.model_name
    code, err = post(running.url + "/v1/chat/completions", body)
    assert code == status
    assert set(err["error"]) >= {"message", "type"} and err["error"]["message"]
    ok = client_for(running).chat.completions.create(
        model=running.model_name, messages=[{"role": "user", "content": "still there?"}], max_tokens=3)
    assert ok.usage.completion_tokens == 3


def test_second_worker_joins_fast_and_kill_9_leaves_fast(running):
    client = client_for(running)
    second = running.worker(engine="mock", name="second")
    ready_at = time.monotonic()
    seen = set()
    while time.monotonic() - ready_at < 2.0 and len(seen) < 2:
        seen.add(_served_by(running))
    assert len(seen) == 2, "the second worker did not serve within 2 s of being ready"

    second.signal(signal.SIGKILL)
    killed = time.monotonic()
    # the frontend keeps serving on the first worker throughout
    while time.monotonic() - killed < 6:
        r = client.chat.completions.create(model=running.model_name,
                                           messages=[{"role": "user", "content": "hi"}], max_tokens=2)
        assert r.usage.completion_tokens == 2
        if _instances(running) == 1:
            break
        time.sleep(0.2)
    assert _instances(running) == 1
    assert time.monotonic() - killed < 5.5


def _instances(c) -> int:
    with urllib.request.urlopen(c.url + "/health") as r:
        return json.loads(r.read())["instances"]


def _served_by(c) -> str:
    req = urllib.request.Request(
        c.url + "/v1/chat/completions",
        json.dumps({"model": c.model_name, "messages": [{"role": "user", "content": "x"}],
                    "max_tokens": 1}).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return r.headers["x-shoal-worker"]
