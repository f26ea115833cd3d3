"""GPU proof that SGLang's HiCache flags reach SGLang through shoal's worker flags, and what they buy.

    prove_hicache.py MODEL [--hicache]        one engine, one run (a fresh process per setting)
    prove_hicache.py MODEL --both             both settings, one after the other

The worker's own parser (`services.worker.args.parse`) turns the command line into the engine, as
`python -m services.decode --engine sglang ...` does. The GPU KV pool is capped at 4,096 tokens;
prompt A (1,024 tokens) runs, six other 1,024-token prompts push it out of GPU memory, then A runs
again. Every result is one JSON line:
  hc_engine   the flags SGLang got (server_args), start-up seconds
  hc_repeat   cached tokens of A's repeat (from SGLang through shoal's usage), KV events seen on
              shoal's sink (stored / removed blocks), greedy tokens equal between A's two runs
"""

from __future__ import annotations

import asyncio
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from prove import SGLANG_FLAGS, emit, exit_status

POOL = ["--max-total-tokens", "4096", "--mem-fraction-static", "0.3"]
HICACHE = ["--enable-hierarchical-cache", "--hicache-ratio", "4", "--hicache-write-policy", "write_through"]
PROMPT_TOKENS = 1024


def base_flags() -> list[str]:
    """The proof's SGLang flags with this proof's pool size instead of theirs."""
    out, skip = [], False
    for i, f in enumerate(SGLANG_FLAGS):
        if skip:
            skip = False
            continue
        if f in ("--max-total-tokens", "--mem-fraction-static") and i + 1 < len(SGLANG_FLAGS):
            skip = True
            continue
        out.append(f)
    return [*out, *POOL]


async def run(model: str, hicache: bool) -> None:
    from protocol.messages import EngineRequest, SamplingOptions, StopConditions
    from services.worker.args import parse
    from shared.engine.registry import make_engine

    argv = ["--engine", "sglang", "--model-path", model, *base_flags(), *(HICACHE if hicache else [])]
    cfg = parse(argv)
    engine: Any = make_engine(cfg.engine)
    events: list[Any] = []
    engine.set_kv_event_sink(lambda evs, dp_rank=0: events.extend(evs))
    t0 = time.monotonic()
    await engine.start()
    sa = engine.sgl.server_args
    emit("hc_engine", hicache=hicache, startup_s=round(time.monotonic() - t0, 1),
         enable_hierarchical_cache=getattr(sa, "enable_hierarchical_cache", None),
         hicache_ratio=getattr(sa, "hicache_ratio", None),
         hicache_write_policy=getattr(sa, "hicache_write_policy", None),
         max_total_tokens=getattr(sa, "max_total_tokens", None), runtime=str(engine.runtime_config()))
    rng = random.Random(0)
    vocab = 250  # byte tokens of the tiny tokenizer: any id below 256 is a real token

    def prompt() -> list[int]:
        return [rng.randrange(vocab) for _ in range(PROMPT_TOKENS)]

    async def once(rid: str, ids: list[int]) -> tuple[list[int], int]:
        req = EngineRequest(rid, ids, sampling=SamplingOptions(temperature=0.0),
                            stop=StopConditions(max_tokens=4, ignore_eos=True))
        toks, cached = [], 0
        async for chunk in engine.generate(req):
            toks += chunk.token_ids
            if chunk.usage is not None:
                cached = chunk.usage.cached_tokens
        return toks, cached

    try:
        a = prompt()
        first, cached_first = await once("a1", a)
        for i in range(6):
            await once(f"fill{i}", prompt())
        await asyncio.sleep(1.0)  # write-through copies and KV events settle
        again, cached_again = await once("a2", a)
        await asyncio.sleep(0.5)
        stored = sum(len(e.block_hashes) for e in events if type(e).__name__ == "BlockStored")
        removed = sum(len(e.block_hashes) for e in events if type(e).__name__ == "BlockRemoved")
        emit("hc_repeat", hicache=hicache, ok=same_tokens_ok(first, again) and (cached_again > 0 or not hicache),
             cached_first=cached_first, cached_repeat=cached_again,
             prompt_tokens=PROMPT_TOKENS, same_tokens=first == again, stored_blocks=stored, removed_blocks=removed)
    finally:
        await engine.stop()


def same_tokens_ok(first: list[int], again: list[int]) -> bool:
    return first == again


def main(argv: list[str]) -> None:
    model = argv[0]
    if "--both" in argv:
        for flag in ([], ["--hicache"]):
            out = subprocess.run([sys.executable, __file__, model, *flag], capture_output=True, text=True,
                                 timeout=280)
            lines = [ln for ln in out.stdout.splitlines() if ln.startswith("{")]
            print("\n".join(lines), flush=True)
            if out.returncode != 0:
                emit("hc_failed", hicache=bool(flag), rc=out.returncode, tail=(out.stdout + out.stderr)[-3000:])
        raise SystemExit(exit_status())
    asyncio.run(run(model, "--hicache" in argv))
    raise SystemExit(exit_status())


if __name__ == "__main__":
    main(sys.argv[1:])
