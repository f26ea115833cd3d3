"""LoRA on the reference engine: time per output token of a batch mixing adapters vs the base model alone.

python -m tests.bench.bench_lora [--adapters 4] [--concurrency 16] [--max-tokens 64] [--hidden-size 256]
                                 [--threads 2] [--append docs/BENCHMARKS.md]

The same prompts run greedy with ignore_eos three ways: on an engine without LoRA,
on an engine with LoRA on but every request on the base model, and spread evenly
over N adapters (peft folders of rank 8 on every target module, made here). The
issue's bar: mixed adapters cost at most 1.5x the base model's time per token.
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

from protocol.messages import EngineRequest, SamplingOptions, StopConditions
from shared.engine.reference import ReferenceConfig, ReferenceEngine
from shared.model.tiny import make_tiny
from tests.bench.bench_reference import make_prompts
from tests.bench.report import append_table
from tests.lora_adapters import make_adapter


async def run(eng: ReferenceEngine, prompts: list[list[int]], loras: list[str], max_tokens: int, tag: str) -> int:
    async def one(i: int) -> int:
        req = EngineRequest(request_id=f"{tag}-{i}", token_ids=prompts[i], sampling=SamplingOptions(temperature=0.0),
                            stop=StopConditions(max_tokens=max_tokens, ignore_eos=True), lora=loras[i])
        return sum([len(c.token_ids) async for c in eng.generate(req)])

    return sum(await asyncio.gather(*(one(i) for i in range(len(prompts)))))


async def bench(args: argparse.Namespace, model: Path, adapters: dict[str, str]) -> list[tuple[str, int, float]]:
    prompts = make_prompts(args.concurrency, 256, max_len=64)
    names = list(adapters)
    cases = [("base model, LoRA off", False, [""] * len(prompts)),
             ("base model, LoRA on", True, [""] * len(prompts)),
             (f"{len(names)} adapters mixed", True, [names[i % len(names)] for i in range(len(prompts))])]
    rows = []
    for label, lora_on, loras in cases:
        eng = ReferenceEngine(ReferenceConfig(model_path=str(model), num_threads=args.threads, enable_lora=lora_on,
                                              lora_paths=adapters if lora_on else {},
                                              max_loras_per_batch=len(names)))
        await eng.start()
        await run(eng, prompts[:2], loras[:2], 4, "warm")
        best = float("inf")
        tokens = 0
        for r in range(args.repeats):
            t0 = time.perf_counter()
            tokens = await run(eng, prompts, loras, args.max_tokens, f"r{r}")
            best = min(best, time.perf_counter() - t0)
        await eng.stop()
        rows.append((label, tokens, best))
    return rows


def table(rows: list[tuple[str, int, float]], args: argparse.Namespace) -> str:
    base = rows[0][2] / rows[0][1]
    lines = [f"LoRA on the reference engine: {args.concurrency} concurrent requests, {args.max_tokens} new tokens "
             f"each, tiny Llama hidden {args.hidden_size} x {args.layers} layers, adapters rank 8 on q/k/v/o/gate/up/"
             f"down, torch threads {torch.get_num_threads()}, best of {args.repeats}, {platform.machine()}",
             "", "| batch | output tokens | seconds | ms per token | vs base |", "|---|---:|---:|---:|---:|"]
    for label, tokens, secs in rows:
        lines.append(f"| {label} | {tokens} | {secs:.2f} | {1000 * secs / tokens:.2f} | "
                     f"{secs / tokens / base:.2f}x |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--adapters", type=int, default=4)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--hidden-size", type=int, default=256)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--append", type=Path, default=None, help="append the table to this markdown file")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        model = make_tiny(Path(tmp) / "tiny", hidden_size=args.hidden_size, num_layers=args.layers,
                          intermediate_size=4 * args.hidden_size)
        adapters = {f"lora{i}": str(make_adapter(model, Path(tmp) / f"lora{i}", seed=i, rank=8))
                    for i in range(args.adapters)}
        rows = asyncio.run(bench(args, model, adapters))
    out = table(rows, args)
    print(out)
    ratio = rows[2][2] / rows[2][1] / (rows[0][2] / rows[0][1])
    print(f"mixed adapters / base time per token: {ratio:.2f} (bar: <= 1.5)")
    append_table(args.append, "tests.bench.bench_lora", sys.argv[1:], out)


if __name__ == "__main__":
    main()
