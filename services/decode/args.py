"""The decode worker's flags: shoal's own few; everything else is the engine's (SGLang's)."""

from __future__ import annotations

import argparse

import msgspec

from shared.config.args import CommonConfig, add_common_args, common_from_args
from shared.config.yaml_config import expand_or_exit
from shared.engine.diffusion.args import add_dllm_args, dllm_options
from shared.engine.lora_args import add_lora_args, lora_options, sglang_lora_argv
from shared.engine.registry import ENGINES, EngineOptions
from shared.engine.sglang.argv import SglangArgsError
from shared.engine.sglang.embedding import EMBEDDING_FLAG, is_embedding
from shared.model.hub import add_model_args, resolve_model_args


class WorkerConfig(msgspec.Struct, frozen=True):
    common: CommonConfig
    engine: EngineOptions
    model_path: str
    served_model_name: str
    component: str = "backend"
    endpoint: str = "generate"
    migration_limit: int = 0
    disaggregation_mode: str = "null"
    drain_grace: float = 30.0
    stream_interval: float = 0.005
    prefill_component: str = "prefill"
    prefill_router: str = ""
    transfer_timeout: float = 10.0
    disagg_fallback_local: bool = False
    embedding: bool = False  # serve `embed` (an embedding model) instead of `generate`
    internal: bool = False  # publish no model card: clients reach this worker through a processor
    image_slots: int = 64  # vision-language models: image embeddings being read at once (NIXL slots)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m services.decode",
                                description="shoal worker: serves `generate` with an engine.")
    add_common_args(p)
    g = p.add_argument_group("worker")
    add_model_args(g)
    g.add_argument("--engine", choices=ENGINES, default="reference")
    g.add_argument("--component", default=None, help="default: backend (prefill with --disaggregation-mode prefill)")
    g.add_argument("--endpoint", default=None, help="default: generate (embed with --embedding)")
    g.add_argument("--embedding", action="store_true",
                   help=f"serve embeddings (endpoint embed) instead of generation; with --engine sglang "
                        f"this is SGLang's {EMBEDDING_FLAG}, which implies it")
    g.add_argument("--disaggregation-mode", choices=("null", "prefill", "decode"), default="null")
    d = p.add_argument_group("disaggregation")
    d.add_argument("--prefill-component", default="prefill", help="decode: where prefill workers serve `generate`")
    d.add_argument("--prefill-router", default="", metavar="COMPONENT",
                   help="decode: ask this router service (python -m services.router --component COMPONENT "
                        "--worker-component prefill) which prefill worker holds the prompt's prefix; "
                        "default: round-robin")
    d.add_argument("--transfer-timeout", type=float, default=10.0, help="seconds a KV transfer may take")
    d.add_argument("--disagg-fallback-local", action="store_true",
                   help="decode: prefill locally when the remote prefill or its transfer fails")
    g.add_argument("--internal", action="store_true",
                   help="publish no model card: the worker serves a processor (python -m services.processor), "
                        "which registers the model (multimodal E/PD and E/P/D)")
    g.add_argument("--image-slots", type=int, default=64,
                   help="vision-language models: image embeddings read over NIXL at once")
    g.add_argument("--drain-grace", type=float, default=30.0, help="seconds to finish requests on SIGTERM")
    g.add_argument("--stream-interval-ms", type=float, default=5.0,
                   help="least time between a request's frames; tokens made meanwhile share one frame (0: off)")
    e = p.add_argument_group("reference and mock engines")
    e.add_argument("--page-size", type=int, default=16)
    e.add_argument("--num-blocks", "--num-gpu-blocks-override", dest="num_blocks", type=int, default=0)
    e.add_argument("--max-num-seqs", dest="max_running", type=int, default=64)
    e.add_argument("--max-num-batched-tokens", dest="max_batched_tokens", type=int, default=2048)
    e.add_argument("--max-waiting", type=int, default=1024)
    e.add_argument("--context-length", type=int, default=0)
    e.add_argument("--speedup-ratio", type=float, default=1.0, help="mock: simulated time divided by this")
    e.add_argument("--prefill-ms-per-token", type=float, default=0.02, help="mock: prefill cost of an uncached token")
    e.add_argument("--device", default="cpu", help="reference: cpu or cuda")
    add_dllm_args(p)
    add_lora_args(p)
    return p


def parse(argv: list[str]) -> WorkerConfig:
    p = parser()
    argv = expand_or_exit(p, argv)
    ns, extra = p.parse_known_args(argv)
    if extra and ns.engine != "sglang":
        p.error(f"unrecognized arguments for engine {ns.engine}: {' '.join(extra)}")
    model_path, name = resolve_model_args(p, ns, "make one with: shoal model make-tiny DIR")
    try:
        sglang_embedding = ns.engine == "sglang" and is_embedding(extra)
    except SglangArgsError as e:
        p.error(str(e))
    embedding = ns.embedding or sglang_embedding
    try:
        dllm = dllm_options(ns)
        lora = lora_options(ns)
    except ValueError as e:
        p.error(str(e))
    if ns.engine == "diffusion" and (embedding or ns.disaggregation_mode != "null"):
        p.error("the diffusion engine serves generation only: no --embedding, no --disaggregation-mode")
    if embedding and ns.disaggregation_mode != "null":
        p.error("an embedding worker has no prefill/decode halves: drop --disaggregation-mode")
    if embedding and ns.engine == "sglang" and not sglang_embedding:
        extra.append(EMBEDDING_FLAG)
    if ns.engine == "sglang" and ns.disaggregation_mode != "null":
        extra += ["--disaggregation-mode", ns.disaggregation_mode]
    if ns.engine == "sglang":  # flags SGLang has too: what the user gave reaches it
        extra += _given(argv, ("--page-size", "--context-length", "--device"), ns) + sglang_lora_argv(ns)
    opts = EngineOptions(
        engine=ns.engine, model_path=model_path, page_size=ns.page_size, num_blocks=ns.num_blocks,
        max_running=ns.max_running, max_batched_tokens=ns.max_batched_tokens, max_waiting=ns.max_waiting,
        context_length=ns.context_length, speedup_ratio=ns.speedup_ratio,
        prefill_ms_per_token=ns.prefill_ms_per_token, device=ns.device, extra_args=extra, **dllm, **lora,
    )
    component = ns.component or ("prefill" if ns.disaggregation_mode == "prefill" else "backend")
    return WorkerConfig(common=common_from_args(ns), engine=opts, model_path=model_path,
                        served_model_name=name, component=component,
                        endpoint=ns.endpoint or ("embed" if embedding else "generate"), embedding=embedding,
                        disaggregation_mode=ns.disaggregation_mode, drain_grace=ns.drain_grace,
                        stream_interval=ns.stream_interval_ms / 1000, prefill_component=ns.prefill_component,
                        prefill_router=ns.prefill_router,
                        transfer_timeout=ns.transfer_timeout, disagg_fallback_local=ns.disagg_fallback_local,
                        internal=ns.internal, image_slots=ns.image_slots)


def _given(argv: list[str], flags: tuple[str, ...], ns: argparse.Namespace) -> list[str]:
    out: list[str] = []
    for flag in flags:
        if any(a == flag or a.startswith(flag + "=") for a in argv):
            out += [flag, str(getattr(ns, flag[2:].replace("-", "_")))]
    return out
