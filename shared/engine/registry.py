"""Build an engine by name from the worker's typed options; the one place that knows the engines by name."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

import msgspec

from protocol.discovery import DEFAULT_PAGE_SIZE
from shared.config.flags import FlagGroup, flag
from shared.engine.base import Engine
from shared.engine.diffusion.args import DLLM_FLAGS, DllmOptions, dllm_options
from shared.engine.lora_args import LORA_FLAGS, LoraOptions, lora_options, sglang_lora_argv
from shared.engine.mock import MOCK_FLAGS, MockConfig

ENGINES = ("reference", "mock", "sglang", "diffusion")
GENERATION_ONLY = ("diffusion",)  # no embeddings, no prefill/decode halves
NO_LORA = ("diffusion",)
_DLLM_HINTS = {"sglang": " (SGLang takes block_size and threshold from the YAML file of its own "
                         "--dllm-algorithm-config, which passes through)"}


class EngineOptions(msgspec.Struct, frozen=True):
    """shoal's own engine knobs; each engine's own ones in its struct (SGLang's pass through as `extra_args`)."""

    engine: str = "reference"
    model_path: str = ""
    page_size: int = DEFAULT_PAGE_SIZE
    num_blocks: int = 0  # 0: the engine decides (from memory for reference)
    host_kv_blocks: int = 0  # reference: a host-memory KV tier of this many blocks; 0: off
    max_running: int = 64
    max_batched_tokens: int = 2048
    max_waiting: int = 1024
    context_length: int = 0  # 0: the model's
    device: str = "cpu"  # reference and diffusion
    extra_args: list[str] = []
    mock: MockConfig = MockConfig()  # its timing flags; the shared knobs above are filled in by make_engine
    dllm: DllmOptions = DllmOptions()
    lora: LoraOptions = LoraOptions()  # every engine; SGLang gets the flags back


ENGINE_FLAGS = FlagGroup(
    "engine (reference, mock, diffusion; SGLang takes the ones it shares)", EngineOptions,
    flag("engine", "--engine", choices=ENGINES),
    flag("page_size", "--page-size"),
    flag("num_blocks", "--num-blocks", "--num-gpu-blocks-override"),
    flag("host_kv_blocks", "--host-kv-blocks", metavar="N",
         help="reference: GPU KV blocks evicted are copied to host memory, up to N (LRU), and copied back on a "
              "prefix hit instead of recomputed (KV events with medium host); 0: off"),
    flag("max_running", "--max-num-seqs"),
    flag("max_batched_tokens", "--max-num-batched-tokens"),
    flag("max_waiting", "--max-waiting"),
    flag("context_length", "--context-length"),
    flag("device", "--device", help="reference and diffusion: cpu or cuda"),
)


def add_engine_args(parser: argparse.ArgumentParser) -> None:
    ENGINE_FLAGS.add_to(parser)
    MOCK_FLAGS.add_to(parser)
    DLLM_FLAGS.add_to(parser)
    LORA_FLAGS.add_to(parser)


def engine_options(ns: argparse.Namespace, model_path: str, extra: list[str], argv: Sequence[str],
                   embedding: bool, disaggregation_mode: str) -> tuple[EngineOptions, bool]:
    """The engine's options and whether it serves embeddings; ValueError on flags it does not take."""
    opts = ENGINE_FLAGS.build(ns, model_path=model_path, mock=MOCK_FLAGS.build(ns), lora=lora_options(ns))
    opts = msgspec.structs.replace(opts, dllm=dllm_options(ns, opts.engine, _DLLM_HINTS.get(opts.engine, "")))
    if opts.engine in GENERATION_ONLY and (embedding or disaggregation_mode != "null"):
        raise ValueError(f"the {opts.engine} engine serves generation only: no --embedding, "
                         "no --disaggregation-mode")
    if opts.engine in NO_LORA and opts.lora.enable_lora:
        raise ValueError(f"the {opts.engine} engine runs no LoRA adapters: drop --enable-lora/--lora-paths")
    if opts.engine != "sglang":
        if extra:
            raise ValueError(f"unrecognized arguments for engine {opts.engine}: {' '.join(extra)}")
        return opts, embedding
    from shared.engine.sglang.passthrough import sglang_argv

    shared = {**vars(ns), **msgspec.structs.asdict(opts)}  # SGLang's flags shoal has too, by field name
    extra, embedding = sglang_argv(extra, list(argv), shared, embedding, disaggregation_mode)
    return msgspec.structs.replace(opts, extra_args=extra + sglang_lora_argv(opts.lora)), embedding


def make_engine(opts: EngineOptions, output_token_ids: Sequence[int] = (), eos_token_id: int | None = None) -> Engine:
    """`output_token_ids`, `eos_token_id`: what the mock engine emits (printable text of the model's vocabulary)."""
    if opts.engine == "mock":
        from shared.engine.mock import MockEngine

        m = opts.mock
        return MockEngine(msgspec.structs.replace(
            m, num_blocks=opts.num_blocks or m.num_blocks, page_size=opts.page_size, max_running=opts.max_running,
            max_waiting=opts.max_waiting, max_batched_tokens=opts.max_batched_tokens,
            context_length=opts.context_length or m.context_length, eos_token_id=eos_token_id,
            output_tokens=list(output_token_ids) or m.output_tokens, model_path=opts.model_path,
            enable_lora=opts.lora.enable_lora, lora_paths=opts.lora.adapters,
        ))
    if opts.engine == "reference":
        from shared.engine.reference import ReferenceConfig, ReferenceEngine
        from shared.engine.reference.cross_encoder import CrossEncoderEngine, is_cross_encoder
        from shared.engine.reference.encoder import EncoderEngine, is_encoder

        kind = (CrossEncoderEngine if is_cross_encoder(opts.model_path) else EncoderEngine
                ) if is_encoder(opts.model_path) else ReferenceEngine
        return kind(ReferenceConfig(
            model_path=opts.model_path, device=opts.device, page_size=opts.page_size,
            num_blocks=opts.num_blocks, max_running=opts.max_running, host_kv_blocks=opts.host_kv_blocks,
            max_batched_tokens=opts.max_batched_tokens, context_length=opts.context_length,
            max_waiting=opts.max_waiting, enable_lora=opts.lora.enable_lora, lora_paths=opts.lora.adapters,
            max_loras_per_batch=opts.lora.max_loras_per_batch, max_lora_rank=opts.lora.max_lora_rank,
        ))
    if opts.engine == "diffusion":
        from shared.engine.diffusion.config import DiffusionConfig
        from shared.engine.diffusion.engine import DiffusionEngine

        return DiffusionEngine(DiffusionConfig(
            model_path=opts.model_path, device=opts.device, max_running=opts.max_running,
            max_batched_tokens=opts.max_batched_tokens, max_waiting=opts.max_waiting,
            context_length=opts.context_length, **msgspec.structs.asdict(opts.dllm),
        ))
    if opts.engine == "sglang":
        from shared.engine.sglang import SglangEngine, build_sglang_config

        return SglangEngine(build_sglang_config(opts.extra_args, model_path=opts.model_path))
    raise ValueError(f"unknown engine {opts.engine!r}; choose one of {', '.join(ENGINES)}")
