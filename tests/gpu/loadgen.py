# ruff: noqa
# Copied unchanged from ../shared/bench/loadgen.py (the side-by-side bench material) to travel to the GPU.
"""Streaming OpenAI chat-completions load generator (the same for every system measured).

python loadgen.py --url http://127.0.0.1:8000 --model M --concurrency 64 --requests 2000 \
    --prompt-words 200 --max-tokens 64 [--prefixes 0 --prefix-words 0]
Prints one JSON line: req/s, output tok/s, TTFT and ITL percentiles, errors.
"""
import argparse
import asyncio
import json
import random
import time

import aiohttp

WORDS = "the of and to in is was for on that with as by at from his her it an were are which this be or has had not but".split()


def text(rng, n):
    return " ".join(rng.choice(WORDS) for _ in range(n))


def pct(xs, p):
    if not xs:
        return None
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p / 100 * len(xs)))]


async def one(session, args, prompt, stats):
    body = {"model": args.model, "messages": [{"role": "user", "content": prompt}],
            "max_tokens": args.max_tokens, "stream": True, "ignore_eos": True,
            "min_tokens": args.max_tokens,
            "stream_options": {"include_usage": True}}
    t0 = time.perf_counter()
    first = last = None
    n_chunks = 0
    usage_tokens = None
    gaps = []
    try:
        async with session.post(args.url + "/v1/chat/completions", json=body) as r:
            if r.status != 200:
                stats["errors"] += 1
                stats["err_sample"] = (r.status, (await r.text())[:200])
                return
            async for raw in r.content:
                line = raw.strip()
                if not line.startswith(b"data:"):
                    continue
                data = line[5:].strip()
                if data == b"[DONE]":
                    break
                if b'"usage":{' in data or b'"usage": {' in data:  # parse only the usage chunk
                    usage = json.loads(data).get("usage") or {}
                    usage_tokens = usage.get("completion_tokens", usage_tokens)
                    details = usage.get("prompt_tokens_details") or {}
                    stats["prompt_tokens"] += usage.get("prompt_tokens") or 0
                    stats["cached_tokens"] += details.get("cached_tokens") or 0
                if b'"content":"' in data and b'"content":""' not in data:
                    now = time.perf_counter()
                    if first is None:
                        first = now
                    else:
                        gaps.append(now - last)
                    last = now
                    n_chunks += 1
    except Exception as e:  # noqa: BLE001
        stats["errors"] += 1
        stats["err_sample"] = repr(e)[:200]
        return
    if first is None:
        stats["errors"] += 1
        return
    stats["ttft"].append(first - t0)
    stats["itl"].extend(gaps)
    stats["tokens"] += usage_tokens if usage_tokens else n_chunks
    stats["chunks"] += n_chunks
    stats["done"] += 1


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", default="http://127.0.0.1:8000")
    ap.add_argument("--model", required=True)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--requests", type=int, default=500)
    ap.add_argument("--prompt-words", type=int, default=200)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--prefixes", type=int, default=0, help="distinct shared prefixes (0: none)")
    ap.add_argument("--prefix-words", type=int, default=0)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--label", default="")
    args = ap.parse_args()
    rng = random.Random(args.seed)
    prefixes = [text(rng, args.prefix_words) for _ in range(args.prefixes)]
    prompts = []
    for _ in range(args.requests):
        p = text(rng, args.prompt_words)
        if prefixes:
            p = rng.choice(prefixes) + " " + p
        prompts.append(p)
    stats = {"ttft": [], "itl": [], "tokens": 0, "chunks": 0, "done": 0, "errors": 0,
             "prompt_tokens": 0, "cached_tokens": 0}
    queue = asyncio.Queue()
    for p in prompts:
        queue.put_nowait(p)
    conn = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=600)
    async with aiohttp.ClientSession(connector=conn, timeout=timeout) as s:
        async def worker():
            while not queue.empty():
                await one(s, args, queue.get_nowait(), stats)
        t0 = time.perf_counter()
        await asyncio.gather(*[worker() for _ in range(args.concurrency)])
        dt = time.perf_counter() - t0
    ms = lambda x: None if x is None else round(x * 1000, 2)  # noqa: E731
    print(json.dumps({"label": args.label, "concurrency": args.concurrency, "done": stats["done"],
                      "errors": stats["errors"], "secs": round(dt, 2),
                      "req_s": round(stats["done"] / dt, 1), "tok_s": round(stats["tokens"] / dt, 1),
                      "chunks_per_req": round(stats["chunks"] / max(1, stats["done"]), 1),
                      "ttft_p50_ms": ms(pct(stats["ttft"], 50)), "ttft_p99_ms": ms(pct(stats["ttft"], 99)),
                      "itl_p50_ms": ms(pct(stats["itl"], 50)), "itl_p99_ms": ms(pct(stats["itl"], 99)),
                      "cached_frac": round(stats["cached_tokens"] / max(1, stats["prompt_tokens"]), 3),
                      "err_sample": stats.get("err_sample")}))


asyncio.run(main())
