"""OpenAI `n` > 1: several choices per request, whole and streamed, cancelled together."""

from __future__ import annotations

import asyncio
import json
import time

import aiohttp
import openai

from tests.integration.test_worker_metrics import samples, value

ENDPOINT = {"component": "backend", "endpoint": "generate"}


def test_n_choices_whole_and_streamed(cluster):
    cluster.worker(engine="reference")
    cluster.frontend()
    cluster.wait_models()
    client = openai.OpenAI(base_url=cluster.url + "/v1", api_key="none", max_retries=0, timeout=60)
    msgs = [{"role": "user", "content": "tell me something"}]

    # sampled with a seed: choice i is what n=1 with seed 7+i gives
    whole = client.chat.completions.create(model=cluster.model_name, messages=msgs, n=3, max_tokens=6,
                                           temperature=1.0, seed=7, extra_body={"ignore_eos": True})
    assert [c.index for c in whole.choices] == [0, 1, 2]
    singles = [client.chat.completions.create(model=cluster.model_name, messages=msgs, max_tokens=6,
                                              temperature=1.0, seed=7 + i, extra_body={"ignore_eos": True})
               for i in range(3)]
    assert [c.message.content for c in whole.choices] == [s.choices[0].message.content for s in singles]
    assert len({c.message.content for c in whole.choices}) > 1  # different seeds, different samples
    assert whole.usage.completion_tokens == 18 and whole.usage.prompt_tokens == singles[0].usage.prompt_tokens
    assert whole.usage.total_tokens == whole.usage.prompt_tokens + 18

    # streamed completions: chunks of both choices interleave; each ends with its own finish_reason
    text: dict[int, str] = {0: "", 1: ""}
    finished: dict[int, str] = {}
    usage = None
    for chunk in client.completions.create(model=cluster.model_name, prompt="once upon", n=2, max_tokens=5,
                                           temperature=0, stream=True, stream_options={"include_usage": True},
                                           extra_body={"ignore_eos": True}):
        for c in chunk.choices:
            text[c.index] += c.text
            if c.finish_reason:
                finished[c.index] = c.finish_reason
        usage = chunk.usage or usage
    one = client.completions.create(model=cluster.model_name, prompt="once upon", max_tokens=5, temperature=0,
                                    extra_body={"ignore_eos": True})
    assert text == {0: one.choices[0].text, 1: one.choices[0].text}  # greedy: the same twice
    assert finished == {0: "length", 1: "length"}
    assert usage is not None and usage.completion_tokens == 10


def test_a_client_leaving_cancels_every_choice(cluster):
    w = cluster.worker("--speedup-ratio", "2", engine="mock")
    cluster.frontend()
    cluster.wait_models()

    async def leave() -> set[int]:
        body = {"model": cluster.model_name, "prompt": "go", "max_tokens": 3000, "n": 3, "stream": True}
        seen: set[int] = set()
        async with aiohttp.ClientSession() as s, s.post(cluster.url + "/v1/completions", json=body) as r:
            assert r.status == 200
            async for raw in r.content:
                if raw.startswith(b"data: {"):
                    seen |= {c["index"] for c in json.loads(raw[6:])["choices"]}
                if len(seen) == 3:
                    assert value(samples(w), "shoal_endpoint_inflight_requests", **ENDPOINT) == 3
                    return seen
        return seen

    assert asyncio.run(leave()) == {0, 1, 2}
    end = time.monotonic() + 10
    got = samples(w)
    while time.monotonic() < end and value(got, "shoal_endpoint_requests_total", **ENDPOINT, outcome="cancelled") < 3:
        time.sleep(0.1)
        got = samples(w)
    assert value(got, "shoal_endpoint_requests_total", **ENDPOINT, outcome="cancelled") == 3
    assert value(got, "shoal_endpoint_inflight_requests", **ENDPOINT) == 0
