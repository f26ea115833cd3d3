"""GPU proof: LoRA on SGLang through shoal's adapter (issue 25).

    prove_lora.py MODEL_DIR OUTDIR

Two random LoRA adapters in peft format (q_proj, v_proj, rank 8) are made for the model, offline. SGLang by
itself (prove_ref.py: `sglang.Engine` with `--enable-lora --lora-paths a=.. b=..`) and shoal's SglangEngine
(in this process, the same flags) run the same prompts greedy, one at a time, under no adapter, a and b:
  l_greedy_equals_sglang         per adapter, shoal's tokens equal SGLang's own
  l_adapters_change_output       a, b and the base model answer differently (the adapters are applied)
  l_load_unload_under_load       16 long base requests running while adapter c (a's weights) is loaded at run
                                 time, used (its tokens equal a's), and unloaded while a request under c runs
                                 (the unload waits for it); every request ends with all its tokens; c is then
                                 refused with a clear error
  l_kv_events_carry_adapter      SGLang's raw KV events name the adapter (lora_id) of an adapter's blocks
  l_router_counts_adapter_only   the blocks shoal publishes for a prompt run only under a hash as the KV
                                 router hashes it for adapter a, and not as it hashes it for the base model
Every result is one JSON line.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from prove import MAX_TOKENS, SGLANG_FLAGS, _capture, _tokens, _wait_json, chat_prompts, emit, exit_status

QUESTIONS = ["What is a KV cache?", "Name three rivers.", "Write a haiku about GPUs.", "hello"]
ONLY_A = "This prompt is only ever asked under adapter a, to see where its KV blocks are counted."
RANK, ALPHA = 8, 16


def make_adapter(model: str, out: Path, seed: int) -> Path:
    """A random peft LoRA adapter (q_proj and v_proj of every layer) for the Llama in `model`."""
    import torch
    from safetensors.torch import save_file

    cfg = json.loads(Path(model, "config.json").read_text())
    hidden, layers = cfg["hidden_size"], cfg["num_hidden_layers"]
    head_dim = cfg.get("head_dim") or hidden // cfg["num_attention_heads"]
    outs = {"q_proj": cfg["num_attention_heads"] * head_dim, "v_proj": cfg["num_key_value_heads"] * head_dim}
    g = torch.Generator().manual_seed(seed)
    tensors = {}
    for i in range(layers):
        for mod, dim_out in outs.items():
            key = f"base_model.model.model.layers.{i}.self_attn.{mod}"
            a = torch.randn(RANK, hidden, generator=g) / hidden**0.5
            tensors[f"{key}.lora_A.weight"] = a.to(torch.bfloat16)
            tensors[f"{key}.lora_B.weight"] = (torch.randn(dim_out, RANK, generator=g) * 0.5).to(torch.bfloat16)
    out.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(out / "adapter_model.safetensors"))
    (out / "adapter_config.json").write_text(json.dumps({
        "base_model_name_or_path": model, "peft_type": "LORA", "task_type": "CAUSAL_LM", "r": RANK,
        "lora_alpha": ALPHA, "lora_dropout": 0.0, "bias": "none", "target_modules": list(outs),
        "fan_in_fan_out": False, "inference_mode": True}))
    return out


def lora_flags(paths: dict[str, Path]) -> list[str]:
    return ["--enable-lora", "--lora-paths", *(f"{k}={v}" for k, v in paths.items()), "--max-loras-per-batch", "4",
            "--max-lora-rank", str(RANK), "--lora-target-modules", "q_proj", "v_proj", *SGLANG_FLAGS]


def start_reference(model: str, flags: list[str], runs: list[dict[str, Any]], outdir: Path, name: str
                    ) -> subprocess.Popen[bytes]:
    spec = outdir / f"{name}_spec.json"
    spec.write_text(json.dumps({"model": model, "flags": flags, "runs": runs}))
    log = open(outdir / f"{name}.log", "wb")  # closed when the process exits
    return subprocess.Popen([sys.executable, str(Path(__file__).parent / "prove_ref.py"), str(spec),
                             str(outdir / f"{name}.json")], stdout=log, stderr=subprocess.STDOUT)


async def amain(model: str, outdir: Path) -> None:
    import msgspec
    import zmq
    import zmq.asyncio

    from protocol.messages import EngineRequest, SamplingOptions, StopConditions
    from shared.engine.sglang import SglangEngine, build_sglang_config
    from shared.engine.sglang.wire import WireStored, decode_batch
    from shared.kv.hashing import block_hashes, lora_root

    t0 = time.monotonic()
    paths = {name: make_adapter(model, outdir / "adapters" / name, seed) for name, seed in (("a", 1), ("b", 2))}
    emit("l_adapters_made", seconds=round(time.monotonic() - t0, 1), rank=RANK, modules=["q_proj", "v_proj"])
    prompts = chat_prompts(model, QUESTIONS)
    only_a = chat_prompts(model, [ONLY_A])[0]
    runs = [{"ids": p, "lora": lora, "max_tokens": MAX_TOKENS} for lora in (None, "a", "b") for p in prompts]
    runs.append({"ids": only_a, "lora": "a", "max_tokens": MAX_TOKENS})
    flags = lora_flags(paths)
    ref_proc = start_reference(model, flags, runs, outdir, "lora_ref")
    cfg = build_sglang_config(list(flags), model_path=model)
    engine = SglangEngine(cfg)
    t0 = time.monotonic()
    await engine.start()
    emit("l_shoal_started", startup_s=round(time.monotonic() - t0, 1), adapters=engine.lora_names())
    assert cfg.kv_events is not None
    ctx = zmq.asyncio.Context()
    raw = ctx.socket(zmq.SUB)
    raw.setsockopt(zmq.SUBSCRIBE, b"")
    raw.connect(cfg.kv_events.endpoint)
    frames: list[list[bytes]] = []
    capture = asyncio.create_task(_capture(raw, frames))
    events: list[Any] = []
    engine.set_kv_event_sink(events.extend)
    await asyncio.sleep(0.5)
    greedy = SamplingOptions(temperature=0.0)

    def req(rid: str, ids: list[int], lora: str | None, n: int = MAX_TOKENS, ignore_eos: bool = False) -> Any:
        return EngineRequest(request_id=rid, token_ids=ids, sampling=greedy, lora=lora or "",
                             stop=StopConditions(max_tokens=n, ignore_eos=ignore_eos))

    try:
        outs = [await _tokens(engine, req(f"r{i}", r["ids"], r["lora"])) for i, r in enumerate(runs)]
        ref = await _wait_json(str(outdir / "lora_ref.json"), 400)
        n = len(prompts)
        for k, lora in enumerate((None, "a", "b")):
            same = [outs[k * n + i] == ref["outputs"][k * n + i] for i in range(n)]
            emit("l_greedy_equals_sglang", adapter=lora or "base", all_equal=all(same), per_prompt=same,
                 sglang_startup_s=ref.get("startup_s"))
        base, a, b = outs[:n], outs[n : 2 * n], outs[2 * n : 3 * n]
        differ = [x != y and y != z and x != z for x, y, z in zip(base, a, b, strict=True)]
        emit("l_adapters_change_output", ok=any(differ), per_prompt=differ)
        await _load_unload(engine, req, prompts, a[0])
        await asyncio.sleep(1.0)
        wire = [e for f in frames for e in decode_batch(f[-1]).events if isinstance(e, WireStored)]
        ids = sorted({str(e.lora_id) for e in wire})
        emit("l_kv_events_carry_adapter", ok=any(e.lora_id is not None for e in wire), stored_events=len(wire),
             lora_ids=ids[:8])
        stored = {h for e in events if type(e).__name__ == "BlockStored" for h in e.block_hashes}
        page = cfg.page_size
        as_a = block_hashes(only_a, page, lora_root("a"))
        as_base = block_hashes(only_a, page)
        emit("l_router_counts_adapter_only", ok=bool(as_a) and set(as_a) <= stored and not set(as_base) & stored,
             adapter_blocks_seen=len(set(as_a) & stored), base_blocks_seen=len(set(as_base) & stored),
             prompt_blocks=len(as_a))
    finally:
        capture.cancel()
        await engine.stop()
        ctx.destroy(linger=0)
        with contextlib.suppress(subprocess.TimeoutExpired):
            await asyncio.to_thread(ref_proc.wait, 60)
        await asyncio.to_thread(Path(outdir, "lora_raw_events.bin").write_bytes, msgspec.msgpack.encode(frames))


async def _load_unload(engine: Any, req: Any, prompts: list[list[int]], want_a: list[int]) -> None:
    """Adapter c (a's weights) loaded, used and unloaded while 16 long base requests run."""
    from shared.engine.base import EngineError

    path = engine.adapters.paths["a"]
    long = [asyncio.create_task(_tokens(engine, req(f"load{i}", prompts[i % len(prompts)], None, 400, True)))
            for i in range(16)]
    await asyncio.sleep(0.5)
    t0 = time.monotonic()
    await engine.load_lora("c", path)
    loaded_s = round(time.monotonic() - t0, 2)
    under_c = asyncio.create_task(_tokens(engine, req("c-long", prompts[1], "c", 300, True)))
    await asyncio.sleep(0.3)
    t0 = time.monotonic()
    await engine.unload_lora("c")  # waits for c-long
    unload_s = round(time.monotonic() - t0, 2)
    c_long = await under_c
    base = await asyncio.gather(*long)
    refused = ""
    try:
        await _tokens(engine, req("c-after", prompts[0], "c"))
    except EngineError as e:
        refused = f"{e.code}: {str(e)[:120]}"
    await engine.load_lora("c", path)  # again, alone: its greedy tokens are a's
    c_alone = await _tokens(engine, req("c-alone", prompts[0], "c"))
    await engine.unload_lora("c")
    ok = all(len(x) == 400 for x in base) and len(c_long) == 300 and bool(refused) and c_alone == want_a
    emit("l_load_unload_under_load", ok=ok, load_s=loaded_s, unload_waited_s=unload_s,
         base_tokens=sorted({len(x) for x in base}), c_long_tokens=len(c_long),
         refused_after_unload=refused, c_equals_a=c_alone == want_a)


def main() -> None:
    model, outdir = sys.argv[1], Path(sys.argv[2])
    outdir.mkdir(parents=True, exist_ok=True)
    try:
        asyncio.run(amain(model, outdir))
    except Exception as e:
        emit("l_failed", error=repr(e)[:600])
    raise SystemExit(exit_status())


if __name__ == "__main__":
    main()
