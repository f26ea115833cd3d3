"""Agents end to end on real processes (reference engine, the tiny random model): structured output,
forced tool calls in three formats, streamed deltas that reassemble to the whole answer, 400s for bad grammars."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import jsonschema
import openai
import pytest

from tests.schemas import schemas

SCHEMAS = schemas(20)
MAX_TOKENS = 1500  # the schemas are bounded: constrained output ends well before


def _client(cluster: Any) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=cluster.url + "/v1", api_key="none", max_retries=0, timeout=300)


async def _gather_limited(coros: list[Any], limit: int = 40) -> list[Any]:
    sem = asyncio.Semaphore(limit)

    async def one(c: Any) -> Any:
        async with sem:
            return await c

    return await asyncio.gather(*(one(c) for c in coros))


async def _chat(client: openai.AsyncOpenAI, model: str, stream: bool, **kw: Any) -> dict[str, Any]:
    """The answer as {content, reasoning, calls, finish}; a stream is reassembled from its deltas."""
    msgs = [{"role": "user", "content": "answer in JSON"}]
    if not stream:
        r = await client.chat.completions.create(model=model, messages=msgs, max_tokens=MAX_TOKENS, temperature=0,
                                                 **kw)
        m = r.choices[0].message
        calls = [(c.id, c.function.name, c.function.arguments) for c in m.tool_calls or []]
        return {"content": m.content, "calls": calls, "finish": r.choices[0].finish_reason}
    content, finish = "", None
    calls: dict[int, list[str]] = {}
    async for chunk in await client.chat.completions.create(model=model, messages=msgs, max_tokens=MAX_TOKENS,
                                                            temperature=0, stream=True, **kw):
        for c in chunk.choices:
            content += c.delta.content or ""
            for d in c.delta.tool_calls or []:
                assert isinstance(d.index, int)
                if d.index not in calls:  # the first delta of a call carries its id and name
                    assert d.id and d.function and d.function.name
                    calls[d.index] = [d.id, d.function.name, ""]
                calls[d.index][2] += (d.function.arguments if d.function else None) or ""
            finish = c.finish_reason or finish
    assert sorted(calls) == list(range(len(calls)))
    return {"content": content or None, "calls": [tuple(calls[i]) for i in sorted(calls)], "finish": finish}


def test_json_schema_output_validates_streamed_and_not(cluster):
    cluster.worker("--tool-call-parser", "qwen25", "--reasoning-parser", "qwen3", engine="reference")
    cluster.frontend()
    cluster.wait_models()

    async def run() -> None:
        client = _client(cluster)
        fmt = [{"type": "json_schema", "json_schema": {"name": f"s{i}", "schema": s, "strict": True}}
               for i, s in enumerate(SCHEMAS)]
        both = await _gather_limited([_chat(client, cluster.model_name, stream, response_format=f)
                                      for stream in (False, True) for f in fmt])
        whole, streamed = both[: len(fmt)], both[len(fmt) :]
        for schema, w, s in zip(SCHEMAS, whole, streamed, strict=True):
            jsonschema.validate(json.loads(w["content"]), schema)
            assert w["finish"] == "stop"
            assert s == w  # greedy: the stream reassembles to the whole answer

        # a JSON object, a regex, a choice
        obj = await _chat(client, cluster.model_name, False, response_format={"type": "json_object"},
                          max_completion_tokens=40)
        assert obj["finish"] == "length" or isinstance(json.loads(obj["content"]), dict)
        rx = await _chat(client, cluster.model_name, False, extra_body={"regex": "[0-9]{3}-[a-z]{2}"})
        assert len(rx["content"]) == 6 and rx["content"][3] == "-" and rx["finish"] == "stop"
        pick = await _chat(client, cluster.model_name, True, extra_body={"choice": ["left", "right", "über"]})
        assert pick["content"] in ("left", "right", "über")

        # bad grammars are 400s that say why; the worker keeps serving
        for kw, words in [({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {
                               "type": "objekt"}}}}, "objekt"),
                          ({"extra_body": {"regex": "(unclosed"}}, "regex"),
                          ({"response_format": {"type": "json_schema", "json_schema": {"name": "x"}}}, "schema"),
                          ({"tool_choice": "required"}, "needs tools")]:
            with pytest.raises(openai.BadRequestError, match=words):
                await _chat(client, cluster.model_name, False, **kw)
        again = await _chat(client, cluster.model_name, False, response_format=fmt[0])
        assert again == whole[0]

    asyncio.run(run())


PARSERS = ("qwen25", "llama3", "mistral")


def test_required_tool_calls_validate_and_stream_the_same(cluster):
    cluster.worker("--tool-call-parser", "qwen25", "--max-num-seqs", "128", engine="reference")
    urls = {}
    for parser in PARSERS:  # one frontend per format: its flag overrides the model card's
        cluster.frontend("--tool-call-parser", parser)
        cluster.wait_models()
        urls[parser] = cluster.url
    tools = [{"type": "function", "function": {"name": f"f{i}", "description": "generated",
                                               "parameters": s}} for i, s in enumerate(SCHEMAS)]
    offers = [[tools[i], tools[(i + 7) % len(tools)]] for i in range(len(tools))]  # call one of two
    kw = [{"tools": o, "tool_choice": "required", "parallel_tool_calls": False} for o in offers]

    async def run() -> None:
        clients = {p: openai.AsyncOpenAI(base_url=u + "/v1", api_key="none", max_retries=0, timeout=300)
                   for p, u in urls.items()}
        jobs = [_chat(clients[p], cluster.model_name, stream, **k) for p in PARSERS for stream in (False, True)
                for k in kw]
        results = await _gather_limited(jobs, limit=len(jobs))
        for n, parser in enumerate(PARSERS):
            whole = results[2 * n * len(kw) : (2 * n + 1) * len(kw)]
            streamed = results[(2 * n + 1) * len(kw) : (2 * n + 2) * len(kw)]
            for offer, w, s in zip(offers, whole, streamed, strict=True):
                assert w["finish"] == "tool_calls" and len(w["calls"]) == 1 and not w["content"], (parser, w)
                _, name, arguments = w["calls"][0]
                schema = next(t["function"]["parameters"] for t in offer if t["function"]["name"] == name)
                jsonschema.validate(json.loads(arguments), schema)
                assert [c[1:] for c in s["calls"]] == [c[1:] for c in w["calls"]]  # ids are per response
                assert s["finish"] == "tool_calls" and not s["content"]
        # a named function is the one called; an unknown one is a 400
        client = clients["mistral"]
        wanted = offers[0][1]["function"]["name"]
        named = await _chat(client, cluster.model_name, False, tools=offers[0], parallel_tool_calls=False,
                            tool_choice={"type": "function", "function": {"name": wanted}})
        assert named["calls"][0][1] == wanted
        with pytest.raises(openai.BadRequestError, match="not in tools"):
            await _chat(client, cluster.model_name, False, tools=offers[0],
                        tool_choice={"type": "function", "function": {"name": "nope"}})

    asyncio.run(run())
