"""TTFT at concurrency 1 straight to a worker over NATS vs through the frontend's HTTP.

The difference is what the frontend adds (HTTP, template, tokenization, SSE).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import secrets
import time

import aiohttp

from protocol.messages import EngineRequest, OutputChunk, StopConditions
from shared.config.args import NatsOptions
from shared.runtime import EndpointClient, Runtime
from shared.tokenizer import Tokenizer
from tests.bench.loadgen import make_prompts, percentile


async def direct(rt: Runtime, prompts: list[list[int]]) -> list[float]:
    client: EndpointClient[OutputChunk] = EndpointClient(rt, "backend", "generate", OutputChunk)
    await client.start()
    await client.wait_for_instances(1, 10)
    out = []
    for ids in prompts:
        rid = secrets.token_hex(8)
        req = EngineRequest(request_id=rid, token_ids=ids, stop=StopConditions(max_tokens=8, ignore_eos=True))
        t0 = time.perf_counter()
        async with contextlib.aclosing(client.generate(req, rid)) as it:
            async for items in it:
                if any(c.token_ids for c in items):
                    out.append(time.perf_counter() - t0)
                    break
    await client.stop()
    return out


async def http(url: str, model: str, texts: list[str]) -> list[float]:
    out = []
    async with aiohttp.ClientSession() as s:
        for text in texts:
            body = {"model": model, "messages": [{"role": "user", "content": text}], "max_tokens": 8,
                    "stream": True, "ignore_eos": True}
            t0 = time.perf_counter()
            async with s.post(url + "/v1/chat/completions", json=body) as r:
                async for raw in r.content:
                    if b'"content":"' in raw and b'"content":""' not in raw:
                        out.append(time.perf_counter() - t0)
                        break
    return out


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--nats-url", required=True)
    ap.add_argument("--namespace", default="bench")
    ap.add_argument("--url", required=True)
    ap.add_argument("--model", default="tiny")
    ap.add_argument("--n", type=int, default=300)
    a = ap.parse_args()
    texts = make_prompts(a.n, 200, 0, 0, 7)
    rt = await Runtime.connect(NatsOptions(url=a.nats_url), a.namespace, "bench")
    async with aiohttp.ClientSession() as s, s.get(a.url + "/v1/models") as r:
        assert (await r.json())["data"], "no model"
    from shared.runtime.models import fetch_tokenizer

    card_tok = None
    async for upd in rt.discovery.watch("shoal-models", f"{a.namespace}.>", initial_only=True):
        if upd.value:
            from protocol import codec
            from protocol.discovery import ModelCard

            card_tok = codec.decode(upd.value, ModelCard).tokenizer_artifact
    tok = Tokenizer.from_files(await fetch_tokenizer(rt, card_tok or ""))
    ids = [tok.encode(tok.apply_chat_template([{"role": "user", "content": t}])) for t in texts]
    d = await direct(rt, ids)
    h = await http(a.url, a.model, texts)
    await rt.close()
    p50d, p50h = percentile(d, 50), percentile(h, 50)
    print(json.dumps({"label": "ttft overhead c=1", "direct_nats_p50_ms": round(p50d * 1000, 3),
                      "frontend_http_p50_ms": round(p50h * 1000, 3),
                      "added_p50_ms": round((p50h - p50d) * 1000, 3)}))


if __name__ == "__main__":
    asyncio.run(main())
