"""GPU proof: speculative decoding passed through shoal's SGLang adapter (issue 25).

    prove_spec.py MODEL_DIR OUTDIR

SGLang by itself without speculation (prove_ref.py: `sglang.Engine`, the proof's flags) and shoal's
SglangEngine (in this process) with SGLang's draft-free n-gram speculation (`--speculative-algorithm NGRAM`,
breadth 1: SGLang refuses a wider tree with 16-token pages on the triton backend) run the same repetitive
prompts greedy, one at a time:
  sp_greedy_equals_nonspec   shoal's speculative tokens equal SGLang's non-speculative ones
  sp_kv_events_reach_router  shoal publishes KV events under speculation: every full block of each prompt
                             arrives as the router hashes it
  sp_speculated              SGLang's own accept-length figure (drafts were verified, not just switched on)
Every result is one JSON line.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from prove import SGLANG_FLAGS, _tokens, _wait_json, chat_prompts, emit, exit_status
from prove_lora import start_reference

NGRAM = ["--speculative-algorithm", "NGRAM", "--speculative-num-draft-tokens", "4",
         "--speculative-ngram-max-bfs-breadth", "1"]
QUESTIONS = ["Repeat after me: one two three, one two three, one two three, one two three.",
             "abc abc abc abc abc abc abc abc abc abc abc abc",
             "The cat sat on the mat. The cat sat on the mat. The cat sat on the mat.",
             "What is a KV cache?"]
MAX_TOKENS = 64


async def amain(model: str, outdir: Path) -> None:
    from protocol.messages import EngineRequest, SamplingOptions, StopConditions
    from shared.engine.sglang import SglangEngine, build_sglang_config
    from shared.kv.hashing import block_hashes

    prompts = chat_prompts(model, QUESTIONS)
    runs = [{"ids": p, "lora": None, "max_tokens": MAX_TOKENS} for p in prompts]
    ref_proc = start_reference(model, list(SGLANG_FLAGS), runs, outdir, "spec_ref")
    cfg = build_sglang_config([*SGLANG_FLAGS, *NGRAM], model_path=model)
    engine = SglangEngine(cfg)
    t0 = time.monotonic()
    await engine.start()
    emit("sp_shoal_started", startup_s=round(time.monotonic() - t0, 1), flags=NGRAM)
    events: list[Any] = []
    engine.set_kv_event_sink(events.extend)
    await asyncio.sleep(0.5)
    try:
        greedy = SamplingOptions(temperature=0.0)
        stop = StopConditions(max_tokens=MAX_TOKENS)
        outs = [await _tokens(engine, EngineRequest(request_id=f"sp{i}", token_ids=p, sampling=greedy, stop=stop))
                for i, p in enumerate(prompts)]
        ref = await _wait_json(str(outdir / "spec_ref.json"), 400)
        same = [o == r for o, r in zip(outs, ref["outputs"], strict=True)]
        first_diff = [next((j for j, (x, y) in enumerate(zip(o, r, strict=False)) if x != y), None)
                      for o, r in zip(outs, ref["outputs"], strict=True)]
        emit("sp_greedy_equals_nonspec", all_equal=all(same), per_prompt=same, first_difference_at=first_diff,
             tokens=[len(o) for o in outs], sglang_startup_s=ref.get("startup_s"))
        await asyncio.sleep(1.0)
        stored = {h for e in events if type(e).__name__ == "BlockStored" for h in e.block_hashes}
        seen = [set(block_hashes(p, cfg.page_size)) <= stored for p in prompts]
        emit("sp_kv_events_reach_router", ok=bool(stored) and all(seen), per_prompt=seen, stored_blocks=len(stored))
        accept = (await engine._internal_state()).get("avg_spec_accept_length")
        emit("sp_speculated", ok=accept is not None and accept > 1.0, avg_spec_accept_length=accept)
    finally:
        await engine.stop()
        with contextlib.suppress(subprocess.TimeoutExpired):
            await asyncio.to_thread(ref_proc.wait, 60)


def main() -> None:
    model, outdir = sys.argv[1], Path(sys.argv[2])
    outdir.mkdir(parents=True, exist_ok=True)
    try:
        asyncio.run(amain(model, outdir))
    except Exception as e:
        emit("sp_failed", error=repr(e)[:600])
    raise SystemExit(exit_status())


if __name__ == "__main__":
    main()
