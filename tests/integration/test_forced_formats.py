"""Forced tool calls end to end in the formats whose grammar shoal builds itself (DSML, MiniMax, harmony,
pythonic, FunctionGemma): one frontend per format (its --tool-call-parser overrides the card), on the reference
engine (the tiny model's own weights, greedy: the same streamed and whole) and the mock engine (random
grammar-allowed tokens). Each answer is one call of an offered tool (the named one when named), arguments valid."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path
from typing import Any

import jsonschema
import openai

from tests.conftest import Cluster
from tests.integration.test_agents import _chat, _gather_limited

FORMATS = ("deepseekv32", "minimax", "gpt-oss", "llama4", "functiongemma")
TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string", "maxLength": 8},
                                     "days": {"type": "integer", "minimum": 1, "maximum": 7},
                                     "metric": {"type": "boolean"}}, "required": ["city", "metric"]}}},
         {"type": "function", "function": {"name": "pick", "parameters": {
             "type": "object", "properties": {"unit": {"enum": ["c", "f"]},
                                              "at": {"type": "object", "properties": {"x": {"type": "integer"}},
                                                     "required": ["x"]}}, "required": ["unit", "at"]}}}]


def test_forced_calls_in_own_formats(cluster: Cluster, tmp_path: Path) -> None:
    models = {"reference": cluster.model.name, "mock": "tiny-mock"}
    shutil.copytree(cluster.model, tmp_path / models["mock"])
    cluster.worker("--max-num-seqs", "64", engine="reference", wait=False)
    cluster.worker("--model-path", str(tmp_path / models["mock"]), "--max-num-seqs", "64", engine="mock", wait=False)
    fronts = []
    for fmt in FORMATS:  # started side by side
        fronts.append((fmt, cluster.frontend("--tool-call-parser", fmt, wait=False), cluster.http_port))
    urls = {}
    for fmt, proc, port in fronts:
        proc.wait_ready(120)
        cluster.http_port = port
        cluster.wait_models(2, timeout=120)
        urls[fmt] = cluster.url

    named = {"type": "function", "function": {"name": "pick"}}

    async def run() -> list[tuple[str, str, Any, bool, dict[str, Any]]]:
        jobs, keys = [], []
        for fmt, url in urls.items():
            client = openai.AsyncOpenAI(base_url=url + "/v1", api_key="none", max_retries=0, timeout=120)
            for engine, stream, choice in (("reference", False, "required"), ("reference", True, "required"),
                                           ("mock", False, named), ("mock", True, "required")):
                keys.append((fmt, engine, choice, stream))
                jobs.append(_chat(client, models[engine], stream, tools=TOOLS, tool_choice=choice,
                                  parallel_tool_calls=False))
        return [(*k, r) for k, r in zip(keys, await _gather_limited(jobs, limit=6), strict=True)]

    results = asyncio.run(run())
    whole = {(f, e, json.dumps(c)): r for f, e, c, s, r in results if not s}
    for fmt, engine, choice, stream, r in results:
        assert r["finish"] == "tool_calls" and len(r["calls"]) == 1 and not r["content"], (fmt, engine, r)
        _, name, arguments = r["calls"][0]
        assert choice == "required" or name == "pick"
        schema = next(t["function"]["parameters"] for t in TOOLS if t["function"]["name"] == name)
        jsonschema.validate(json.loads(arguments), schema)
        if stream:
            same = whole.get((fmt, engine, json.dumps(choice)))
            assert same is None or [c[1:] for c in r["calls"]] == [c[1:] for c in same["calls"]], (fmt, r, same)
