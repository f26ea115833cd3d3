"""GPU proof, part 1: SGLang alone, then shoal's SGLang adapter in-process (no NATS).

Run on the GPU machine by deploy/gpu/prove.sh; every result is one JSON line on stdout.

    prove.py model DIR                 a ~1B-parameter random Llama with a byte tokenizer
    prove.py reference DIR OUT.json    (a) sglang.Engine.generate, greedy, for the proof's prompts
    prove.py adapter DIR OUTDIR REF    shoal's SglangEngine: same greedy tokens as REF, cancel, runtime
                                       config, load, KV events (raw frames saved to OUTDIR/kv_events.bin)
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

MODEL = {"hidden_size": 2048, "num_layers": 22, "num_heads": 16, "num_kv_heads": 8, "intermediate_size": 5632}
SGLANG_FLAGS = [  # the same for every SGLang process of the proof, shoal's and SGLang's own
    "--attention-backend", "triton", "--sampling-backend", "pytorch", "--dtype", "bfloat16",
    "--max-total-tokens", "65536", "--mem-fraction-static", "0.85", "--page-size", "16",
]
if os.environ.get("PROVE_CUDA_GRAPH") != "1":  # CUDA graphs off by default: minutes less start-up per engine
    SGLANG_FLAGS += ["--cuda-graph-backend-decode", "disabled", "--cuda-graph-backend-prefill", "disabled"]
QUESTIONS = ["What is a KV cache?", "Name three rivers.", "Count to ten, please.",
             "Why is the sky blue? Explain it to a child in a few sentences.", "hello", "Write a haiku about GPUs."]
# Asked over HTTP, each once: a prompt seen before hits the prefix cache, which computes it by another kernel
# path, and a random-weight model's near-ties can then flip a greedy token.
HTTP_QUESTIONS = ["Tell me a story.", "What is NATS?", "List four colours.", "Is water wet?",
                  "Translate 'good morning' into French.", "What is two plus two? Answer with a number."]
MAX_TOKENS = 32


FAILED: list[str] = []  # the steps whose check failed, for the exit status


def emit(step: str, **fields: Any) -> None:
    """One JSON line; a step named *_failed, or with all_equal/ok False, is a failed check."""
    print(json.dumps({"step": step, **fields}), flush=True)
    if step.endswith("_failed") or fields.get("all_equal") is False or fields.get("ok") is False:
        FAILED.append(step)


def exit_status(rc: int = 0) -> int:
    """1 when any check failed (each listed on stderr), else `rc`."""
    if FAILED:
        print(f"failed checks: {', '.join(FAILED)}", file=sys.stderr, flush=True)
        return 1
    return rc


def chat_prompts(model: str, questions: list[str] = QUESTIONS) -> list[list[int]]:
    """Token ids exactly as shoal's frontend makes them for a one-message chat."""
    from shared.tokenizer import Tokenizer

    tok = Tokenizer.from_dir(model)
    return [tok.encode(tok.apply_chat_template([{"role": "user", "content": q}])) for q in questions]


def make_model(path: str) -> None:
    from shared.model.tiny import make_tiny

    t0 = time.monotonic()
    make_tiny(path, seed=0, **MODEL)
    size = sum(f.stat().st_size for f in Path(path).iterdir())
    emit("model", path=path, seconds=round(time.monotonic() - t0, 1), bytes=size, **MODEL)


def reference(model: str, out: str) -> None:
    """(a) SGLang by itself: its Engine, the proof's flags, greedy."""
    import sglang
    from sglang.srt.server_args import prepare_server_args

    prompts, http_prompts = chat_prompts(model), chat_prompts(model, HTTP_QUESTIONS)
    t0 = time.monotonic()
    engine = sglang.Engine(server_args=prepare_server_args(["--model-path", model, *SGLANG_FLAGS]))
    started = time.monotonic() - t0
    try:
        # one request at a time: a random-weight model's near-ties make greedy tokens depend on batch shape
        params = {"temperature": 0, "max_new_tokens": MAX_TOKENS}
        outputs = [list(engine.generate(input_ids=p, sampling_params=params)["output_ids"]) for p in prompts]
        http_outputs = [list(engine.generate(input_ids=p, sampling_params=params)["output_ids"])
                        for p in http_prompts]
    finally:
        engine.shutdown()
    Path(out).write_text(json.dumps({"prompts": prompts, "outputs": outputs, "http_prompts": http_prompts,
                                     "http_outputs": http_outputs}))
    emit("a_sglang_engine", startup_s=round(started, 1), prompts=len(prompts),
         tokens=[len(o) for o in outputs], first_output=outputs[0][:12])


async def adapter(model: str, outdir: str, ref_path: str) -> None:
    """shoal's SglangEngine in this process: greedy equality with (a), cancel, load, KV events."""
    import msgspec
    import zmq
    import zmq.asyncio

    from protocol.messages import EngineRequest, SamplingOptions, StopConditions
    from shared.engine.sglang import SglangEngine, build_sglang_config

    cfg = build_sglang_config(list(SGLANG_FLAGS), model_path=model)
    engine = SglangEngine(cfg)
    t0 = time.monotonic()
    await engine.start()
    emit("adapter_started", startup_s=round(time.monotonic() - t0, 1), parsed=cfg.parsed,
         runtime=msgspec.to_builtins(engine.runtime_config()), context_length=engine.context_length())
    ref = await _wait_json(ref_path)
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
    try:
        greedy = SamplingOptions(temperature=0.0)
        stop = StopConditions(max_tokens=MAX_TOKENS)
        reqs = [EngineRequest(request_id=f"p{i}", token_ids=p, sampling=greedy, stop=stop)
                for i, p in enumerate(ref["prompts"])]
        outs = [await _tokens(engine, r) for r in reqs]  # one at a time, as (a) ran them
        same = [o == r for o, r in zip(outs, ref["outputs"], strict=True)]
        emit("adapter_greedy_equals_a", all_equal=all(same), per_prompt=same, first_output=outs[0][:12])
        batched = await asyncio.gather(*(_tokens(engine, r) for r in reqs))  # batched, prefix-cache hits
        emit("adapter_batched_cached_run", equal_to_sequential=[b == o for b, o in zip(batched, outs, strict=True)])
        await _cancel_check(engine, ref["prompts"][3])
        await asyncio.sleep(1.0)
        stored = sum(len(e.block_hashes) for e in events if type(e).__name__ == "BlockStored")
        emit("adapter_kv_events", raw_batches=len(frames), shoal_events=len(events), stored_blocks=stored,
             kinds=sorted({type(e).__name__ for e in events}))
        _save_capture(outdir, frames, cfg.page_size, ref["prompts"])
    finally:
        capture.cancel()
        await engine.stop()
        ctx.destroy(linger=0)


async def _wait_json(path: str, timeout: float = 300.0) -> Any:
    """(a)'s results, written by the reference run beside us."""
    end = time.monotonic() + timeout
    while (found := _read_json(path)) is None:
        if time.monotonic() > end:
            raise TimeoutError(f"no {path} after {timeout}s")
        await asyncio.sleep(0.5)
    return found


def _read_json(path: str) -> Any:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def _save_capture(outdir: str, frames: list[list[bytes]], page_size: int, prompts: list[list[int]]) -> None:
    """The raw SGLang frames (msgpack list of [topic, seq, payload]): tests/fixtures/sglang/kv_events.bin."""
    import msgspec

    Path(outdir, "kv_events.bin").write_bytes(msgspec.msgpack.encode(frames))
    Path(outdir, "kv_events.json").write_text(json.dumps({"page_size": page_size, "prompts": prompts}))


async def _capture(sock: Any, frames: list[list[bytes]]) -> None:
    while True:
        frames.append(await sock.recv_multipart())


async def _tokens(engine: Any, req: Any) -> list[int]:
    out: list[int] = []
    async with contextlib.aclosing(engine.generate(req)) as chunks:
        async for chunk in chunks:
            out += chunk.token_ids
    return out


async def _cancel_check(engine: Any, prompt: list[int]) -> None:
    from protocol.messages import EngineRequest, StopConditions

    req = EngineRequest(request_id="cancel-me", token_ids=prompt, stop=StopConditions(max_tokens=3000, ignore_eos=True))
    got = 0
    async with contextlib.aclosing(engine.generate(req)) as chunks:
        async for chunk in chunks:
            got += len(chunk.token_ids)
            if got >= 5:
                break
    t0 = time.monotonic()
    while engine.load().running and time.monotonic() - t0 < 5:
        await asyncio.sleep(0.05)
    emit("adapter_cancel", tokens_before_cancel=got, running_after=engine.load().running,
         freed_within_s=round(time.monotonic() - t0, 2), load=str(engine.load()))


def main(argv: list[str]) -> None:
    cmd, *rest = argv
    if cmd == "model":
        make_model(rest[0])
    elif cmd == "reference":
        reference(rest[0], rest[1])
    elif cmd == "adapter":
        asyncio.run(adapter(rest[0], rest[1], rest[2]))
    else:
        raise SystemExit(__doc__)
    raise SystemExit(exit_status())


if __name__ == "__main__":
    main(sys.argv[1:])
