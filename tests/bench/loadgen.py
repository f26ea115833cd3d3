"""Streaming OpenAI load generator: N concurrent clients, one JSON line of results.

python -m tests.bench.loadgen --url http://127.0.0.1:8000 --model tiny --concurrency 64 \
    --requests 2000 --prompt-words 200 --max-tokens 64 [--prefixes 8 --prefix-words 500]

Output tokens are counted from the usage chunk; TTFT is the time to the first
non-empty content; inter-token latency is the gap between content chunks
divided by the tokens they carried.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import time
from dataclasses import dataclass, field

import aiohttp

VOCAB = ("time person year way day thing man world life hand part child eye woman place work week "
         "case point number group problem fact the of and to in is was for on that with as").split()


def percentile(xs: list[float], p: float) -> float | None:
    if not xs:
        return None
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p / 100 * len(xs)))]


@dataclass
class Stats:
    ttft: list[float] = field(default_factory=list)
    itl: list[float] = field(default_factory=list)
    tokens: int = 0
    prompt_tokens: int = 0
    cached_tokens: int = 0
    done: int = 0
    errors: int = 0
    status: dict[int, int] = field(default_factory=dict)
    sample_error: str | None = None


def make_prompts(n: int, words: int, prefixes: int, prefix_words: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    heads = [" ".join(rng.choices(VOCAB, k=prefix_words)) for _ in range(prefixes)]
    out = []
    for _ in range(n):
        tail = " ".join(rng.choices(VOCAB, k=words))
        out.append(f"{rng.choice(heads)} {tail}" if heads else tail)
    return out


async def one(session: aiohttp.ClientSession, url: str, body: dict, stats: Stats) -> None:
    t0 = time.perf_counter()
    first = last = None
    usage = None
    try:
        async with session.post(url, json=body) as r:
            stats.status[r.status] = stats.status.get(r.status, 0) + 1
            if r.status != 200:
                stats.errors += 1
                stats.sample_error = f"{r.status} {(await r.text())[:200]}"
                return
            async for raw in r.content:
                if not raw.startswith(b"data: ") or raw.startswith(b"data: [DONE]"):
                    continue
                data = json.loads(raw[6:])
                if data.get("usage"):
                    usage = data["usage"]
                for ch in data.get("choices", []):
                    text = ch.get("delta", {}).get("content") or ch.get("text")
                    if text:
                        now = time.perf_counter()
                        if first is None:
                            first = now
                        else:
                            stats.itl.append(now - last)
                        last = now
                if "error" in data:
                    raise RuntimeError(data["error"].get("message"))
    except Exception as e:
        stats.errors += 1
        stats.sample_error = repr(e)[:200]
        return
    if first is None or usage is None:
        stats.errors += 1
        stats.sample_error = "no content or no usage"
        return
    stats.ttft.append(first - t0)
    stats.tokens += usage["completion_tokens"]
    stats.prompt_tokens += usage["prompt_tokens"]
    stats.cached_tokens += (usage.get("prompt_tokens_details") or {}).get("cached_tokens", 0)
    stats.done += 1


async def run(args: argparse.Namespace) -> dict:
    prompts = make_prompts(args.requests, args.prompt_words, args.prefixes, args.prefix_words, args.seed)
    queue: asyncio.Queue[str] = asyncio.Queue()
    for p in prompts:
        queue.put_nowait(p)
    stats = Stats()
    url = args.url.rstrip("/") + "/v1/chat/completions"
    headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else None
    rate_gap = 1.0 / args.rate if args.rate else 0.0

    async def client(session: aiohttp.ClientSession) -> None:
        while not queue.empty():
            body = {"model": args.model, "messages": [{"role": "user", "content": queue.get_nowait()}],
                    "max_tokens": args.max_tokens, "min_tokens": args.max_tokens, "ignore_eos": True,
                    "stream": True, "stream_options": {"include_usage": True}, "temperature": 0}
            await one(session, url, body, stats)
            if rate_gap:
                await asyncio.sleep(rate_gap * args.concurrency)

    conn = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=conn, headers=headers,
                                     timeout=aiohttp.ClientTimeout(total=args.timeout)) as s:
        t0 = time.perf_counter()
        await asyncio.gather(*(client(s) for _ in range(args.concurrency)))
        secs = time.perf_counter() - t0

    def ms(x: float | None) -> float | None:
        return None if x is None else round(x * 1000, 2)

    return {
        "label": args.label, "concurrency": args.concurrency, "done": stats.done, "errors": stats.errors,
        "status": stats.status, "secs": round(secs, 2), "req_s": round(stats.done / secs, 1),
        "tok_s": round(stats.tokens / secs, 1),
        "ttft_p50_ms": ms(percentile(stats.ttft, 50)), "ttft_p99_ms": ms(percentile(stats.ttft, 99)),
        "itl_p50_ms": ms(percentile(stats.itl, 50)), "itl_p99_ms": ms(percentile(stats.itl, 99)),
        "cached_frac": round(stats.cached_tokens / max(1, stats.prompt_tokens), 3),
        "chunks_per_req": round((len(stats.itl) + stats.done) / max(1, stats.done), 2),  # with content
        "sample_error": stats.sample_error,
    }


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", default="http://127.0.0.1:8000")
    p.add_argument("--model", required=True)
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--requests", type=int, default=500)
    p.add_argument("--prompt-words", type=int, default=200)
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--prefixes", type=int, default=0, help="distinct shared prefixes (0: none)")
    p.add_argument("--prefix-words", type=int, default=0)
    p.add_argument("--rate", type=float, default=0.0, help="requests/s in total (0: as fast as possible)")
    p.add_argument("--timeout", type=float, default=600)
    p.add_argument("--api-key", default=None)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--label", default="")
    return p


def main() -> None:
    print(json.dumps(asyncio.run(run(parser().parse_args()))))


if __name__ == "__main__":
    main()
