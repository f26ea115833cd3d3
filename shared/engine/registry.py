"""Build an engine by name from the worker's typed options."""

from __future__ import annotations

import msgspec

from shared.engine.base import Engine

ENGINES = ("reference", "mock", "sglang", "diffusion")


class EngineOptions(msgspec.Struct, frozen=True):
    """shoal's own engine knobs (SGLang's flags pass through as `extra_args`)."""

    engine: str = "reference"
    model_path: str = ""
    page_size: int = 16
    num_blocks: int = 0  # 0: the engine decides (from memory for reference)
    max_running: int = 64
    max_batched_tokens: int = 2048
    max_waiting: int = 1024
    context_length: int = 0
    speedup_ratio: float = 1.0  # mock only
    prefill_ms_per_token: float = 0.02  # mock only
    device: str = "cpu"  # reference only
    output_token_ids: list[int] = []  # mock only: the ids it emits
    eos_token_id: int | None = None
    extra_args: list[str] = []
    dllm_block_length: int | None = None  # diffusion only: None = the model's own setting
    dllm_steps: int | None = None  # diffusion only
    dllm_threshold: float | None = None  # diffusion only
    dllm_mask_token_id: int | None = None  # diffusion only
    enable_lora: bool = False  # LoRA adapters (shared.engine.lora_args)
    lora_paths: dict[str, str] = {}
    max_loras_per_batch: int = 8
    max_lora_rank: int = 0


def make_engine(opts: EngineOptions) -> Engine:
    if opts.engine == "mock":
        from shared.engine.mock import MockConfig, MockEngine

        kw = {"output_tokens": opts.output_token_ids} if opts.output_token_ids else {}
        return MockEngine(MockConfig(
            num_blocks=opts.num_blocks or 16384, page_size=opts.page_size, max_running=opts.max_running,
            max_waiting=opts.max_waiting, max_batched_tokens=opts.max_batched_tokens,
            context_length=opts.context_length or 8192, speedup=opts.speedup_ratio,
            prefill_ms_per_token=opts.prefill_ms_per_token,
            eos_token_id=opts.eos_token_id, enable_lora=opts.enable_lora, lora_paths=opts.lora_paths, **kw,
        ))
    if opts.engine == "reference":
        from shared.engine.reference import ReferenceConfig, ReferenceEngine
        from shared.engine.reference.encoder import EncoderEngine, is_encoder

        return (EncoderEngine if is_encoder(opts.model_path) else ReferenceEngine)(ReferenceConfig(
            model_path=opts.model_path, device=opts.device, page_size=opts.page_size,
            num_blocks=opts.num_blocks, max_running=opts.max_running,
            max_batched_tokens=opts.max_batched_tokens, context_length=opts.context_length,
            max_waiting=opts.max_waiting, enable_lora=opts.enable_lora, lora_paths=opts.lora_paths,
            max_loras_per_batch=opts.max_loras_per_batch, max_lora_rank=opts.max_lora_rank,
        ))
    if opts.engine == "diffusion":
        from shared.engine.diffusion.config import DiffusionConfig
        from shared.engine.diffusion.engine import DiffusionEngine

        return DiffusionEngine(DiffusionConfig(
            model_path=opts.model_path, device=opts.device, max_running=opts.max_running,
            max_batched_tokens=opts.max_batched_tokens, max_waiting=opts.max_waiting,
            context_length=opts.context_length, block_length=opts.dllm_block_length, steps=opts.dllm_steps,
            threshold=opts.dllm_threshold, mask_token_id=opts.dllm_mask_token_id,
        ))
    if opts.engine == "sglang":
        from shared.engine.sglang import SglangEngine, build_sglang_config

        return SglangEngine(build_sglang_config(opts.extra_args, model_path=opts.model_path))
    raise ValueError(f"unknown engine {opts.engine!r}; choose one of {', '.join(ENGINES)}")
