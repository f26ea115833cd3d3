"""Reference engine throughput against plain transformers `generate` on the same requests.

python -m tests.bench.bench_reference [--model-path DIR] [--requests 32] [--max-tokens 64] [--threads 2]
                                      [--append docs/BENCHMARKS.md]

Every request is greedy with ignore_eos, so all modes produce the same number of
tokens. The engine runs the requests with at most `c` in flight for each
concurrency level; transformers runs them one by one and in left-padded batches.
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import random
import sys
import tempfile
import time
from pathlib import Path

import torch

from protocol.messages import EngineRequest, SamplingOptions, StopConditions
from shared.engine.base import Engine
from shared.engine.reference import ReferenceConfig, ReferenceEngine
from tests.bench.report import append_table


def tiny_model(out_dir: Path) -> Path:
    try:
        from shared.model.tiny import make_tiny
    except ImportError:
        from transformers import LlamaConfig, LlamaForCausalLM

        torch.manual_seed(0)
        cfg = LlamaConfig(vocab_size=320, hidden_size=64, intermediate_size=256, num_hidden_layers=2,
                          num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048)
        LlamaForCausalLM(cfg).save_pretrained(out_dir)
        return out_dir
    return make_tiny(out_dir)


def make_prompts(n: int, vocab: int, seed: int = 0, max_len: int = 128) -> list[list[int]]:
    """n seeded prompts of 16..max_len token ids in [3, vocab)."""
    rng = random.Random(seed)
    return [[rng.randrange(3, vocab) for _ in range(rng.randrange(16, max_len + 1))] for _ in range(n)]


async def engine_run(eng: Engine, prompts: list[list[int]], max_tokens: int, concurrency: int) -> int:
    gate = asyncio.Semaphore(concurrency)

    async def one(i: int, prompt: list[int]) -> int:
        req = EngineRequest(request_id=f"b{concurrency}-{i}", token_ids=prompt,
                            sampling=SamplingOptions(temperature=0.0),
                            stop=StopConditions(max_tokens=max_tokens, ignore_eos=True))
        async with gate:
            return sum([len(c.token_ids) async for c in eng.generate(req)])

    return sum(await asyncio.gather(*(one(i, p) for i, p in enumerate(prompts))))


def hf_generate(model: torch.nn.Module, prompts: list[list[int]], max_tokens: int, pad: int) -> int:
    width = max(len(p) for p in prompts)
    ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    out = model.generate(ids, attention_mask=mask, do_sample=False, max_new_tokens=max_tokens,
                         min_new_tokens=max_tokens, pad_token_id=pad)
    return (out.shape[1] - width) * len(prompts)


def timed(fn: object, *args: object) -> tuple[int, float]:
    t0 = time.perf_counter()
    tokens = fn(*args)  # type: ignore[operator]
    return tokens, time.perf_counter() - t0


async def bench(args: argparse.Namespace, model_path: Path) -> list[tuple[str, int, int, float]]:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32).eval()
    prompts = make_prompts(args.requests, min(model.config.vocab_size, 256))
    pad = model.config.pad_token_id if model.config.pad_token_id is not None else 0
    rows: list[tuple[str, int, int, float]] = []
    hf_generate(model, prompts[:2], 4, pad)  # warm-up
    tokens, secs = timed(lambda: sum(hf_generate(model, [p], args.max_tokens, pad) for p in prompts))
    rows.append(("transformers one by one", 1, tokens, secs))
    for size in (8, args.requests):
        batches = [prompts[i : i + size] for i in range(0, len(prompts), size)]
        tokens, secs = timed(lambda b=batches: sum(hf_generate(model, x, args.max_tokens, pad) for x in b))
        rows.append(("transformers batched (left pad)", size, tokens, secs))
    eng = ReferenceEngine(ReferenceConfig(model_path=str(model_path), num_threads=args.threads))
    await eng.start()
    await engine_run(eng, prompts[:2], 4, 2)  # warm-up
    for c in (1, 8, args.requests):
        t0 = time.perf_counter()
        tokens = await engine_run(eng, prompts, args.max_tokens, c)
        rows.append(("reference engine", c, tokens, time.perf_counter() - t0))
    await eng.stop()
    return rows


def table(rows: list[tuple[str, int, int, float]], args: argparse.Namespace) -> str:
    base = rows[0][2] / rows[0][3]
    lines = [f"reference engine vs transformers: {args.requests} requests, prompts 16-128 tokens, "
             f"{args.max_tokens} new tokens each, torch threads {torch.get_num_threads()}, "
             f"{platform.machine()} {platform.processor() or ''}".rstrip(),
             "", "| mode | concurrency | output tokens | seconds | tokens/s | vs one by one |",
             "|---|---:|---:|---:|---:|---:|"]
    for name, c, tokens, secs in rows:
        lines.append(f"| {name} | {c} | {tokens} | {secs:.2f} | {tokens / secs:.0f} | {tokens / secs / base:.1f}x |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model-path", type=Path, default=None, help="default: a fresh tiny model")
    ap.add_argument("--requests", type=int, default=32)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--append", type=Path, default=None, help="append the table to this markdown file")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        path = args.model_path or tiny_model(Path(tmp))
        rows = asyncio.run(bench(args, path))
    out = table(rows, args)
    print(out)
    append_table(args.append, "tests.bench.bench_reference", sys.argv[1:], out)


if __name__ == "__main__":
    main()
