"""Diffusion engine throughput against denoising steps per block (and a confidence threshold).

python -m tests.bench.bench_diffusion [--model-path DIR] [--requests 16] [--max-tokens 32] [--block 8]
                                      [--steps 1 2 4 8] [--threshold 0.9] [--concurrency 1 16] [--threads 2]
                                      [--append docs/BENCHMARKS.md]

Every request is greedy with ignore_eos, so every setting produces the same
number of tokens; fewer steps per block means fewer forwards per token. The
engine runs in-process on the tiny diffusion model (make-tiny --diffusion).
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

from shared.engine.diffusion.config import DiffusionConfig
from shared.engine.diffusion.engine import DiffusionEngine
from tests.bench.bench_reference import engine_run, make_prompts
from tests.bench.report import append_table

Row = tuple[str, int, int, int, float]  # setting, concurrency, output tokens, iterations, seconds


async def bench_setting(args: argparse.Namespace, model: Path, label: str, steps: int | None,
                        threshold: float | None) -> list[Row]:
    eng = DiffusionEngine(DiffusionConfig(model_path=str(model), block_length=args.block, steps=steps,
                                          threshold=threshold, num_threads=args.threads))
    await eng.start()
    prompts = make_prompts(args.requests, 256, max_len=64)
    rows: list[Row] = []
    try:
        await engine_run(eng, prompts[:2], args.block, 2)  # warm-up
        for c in args.concurrency:
            before = eng.iterations
            t0 = time.perf_counter()
            tokens = await engine_run(eng, prompts, args.max_tokens, c)
            rows.append((label, c, tokens, eng.iterations - before, time.perf_counter() - t0))
    finally:
        await eng.stop()
    return rows


async def bench(args: argparse.Namespace, model: Path) -> list[Row]:
    rows: list[Row] = []
    for s in args.steps:
        rows += await bench_setting(args, model, f"steps {s} ({args.block // min(s, args.block)} tokens/iteration)",
                                    s, None)
    if args.threshold is not None:
        rows += await bench_setting(args, model, f"threshold {args.threshold}", None, args.threshold)
    return rows


def table(rows: list[Row], args: argparse.Namespace) -> str:
    lines = [f"diffusion engine (tiny diffusion model, block {args.block}): {args.requests} requests, prompts "
             f"16-64 tokens, {args.max_tokens} new tokens each, torch threads {torch.get_num_threads()}, "
             f"{platform.machine()} {platform.processor() or ''}".rstrip(),
             "", "| setting | concurrency | output tokens | batched forwards | seconds | tokens/s |",
             "|---|---:|---:|---:|---:|---:|"]
    for label, c, tokens, iterations, secs in rows:
        lines.append(f"| {label} | {c} | {tokens} | {iterations} | {secs:.2f} | {tokens / secs:.0f} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model-path", type=Path, default=None, help="default: a fresh tiny diffusion model")
    ap.add_argument("--requests", type=int, default=16)
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--block", type=int, default=8)
    ap.add_argument("--steps", type=int, nargs="+", default=[1, 2, 4, 8])
    ap.add_argument("--threshold", type=float, default=0.9, help="also run threshold mode (negative: skip)")
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 16])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--append", type=Path, default=None, help="append the table to this markdown file")
    args = ap.parse_args()
    if args.threshold is not None and args.threshold < 0:
        args.threshold = None
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        from shared.model.tiny import make_tiny

        path = args.model_path or make_tiny(Path(tmp) / "tiny-diffusion", diffusion=True)
        rows = asyncio.run(bench(args, path))
    out = table(rows, args)
    print(out)
    append_table(args.append, "tests.bench.bench_diffusion", sys.argv[1:], out)


if __name__ == "__main__":
    main()
