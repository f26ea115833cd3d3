"""Typed configuration of the diffusion engine, and the denoising settings resolved against the model's."""

from __future__ import annotations

import msgspec

from shared.model.diffusion import DiffusionDefaults


class DiffusionConfig(msgspec.Struct, frozen=True):
    model_path: str
    device: str = "cpu"
    dtype: str = "auto"  # "auto": float32 on CPU, bfloat16 (or float16) on CUDA
    max_running: int = 64  # requests denoised together in one forward
    max_batched_tokens: int = 2048  # padded tokens per forward (a longer request runs alone)
    max_waiting: int = 1024
    context_length: int = 0  # 0: the model's max_position_embeddings
    num_threads: int = 0  # torch intra-op threads; 0: torch's default
    # --dllm-* flags; None: the model's own (config.json `shoal_diffusion`), else the defaults
    block_length: int | None = None
    steps: int | None = None
    threshold: float | None = None
    mask_token_id: int | None = None


class DllmSettings(msgspec.Struct, frozen=True):
    """What the unmasking algorithm runs with."""

    mask_token_id: int
    block_length: int
    steps: int  # iterations per block (clamped to block_length: at least one token per iteration)
    threshold: float | None = None  # set: commit every prediction above it (at least one) instead of k


def resolve_settings(cfg: DiffusionConfig, model: DiffusionDefaults, vocab_size: int) -> DllmSettings:
    """Flags over the model's defaults; raises ValueError on settings no request could run with."""
    mask = cfg.mask_token_id if cfg.mask_token_id is not None else model.mask_token_id
    if mask is None:
        raise ValueError("the model names no mask token: give --dllm-mask-token-id (a diffusion model's config.json "
                         "has a shoal_diffusion section; make one with: shoal model make-tiny DIR --diffusion)")
    if not 0 <= mask < vocab_size:
        raise ValueError(f"mask token id {mask} is outside the vocabulary (0..{vocab_size - 1})")
    block = cfg.block_length if cfg.block_length is not None else model.block_length
    steps = cfg.steps if cfg.steps is not None else model.steps
    threshold = cfg.threshold if cfg.threshold is not None else model.threshold
    if block < 1:
        raise ValueError(f"--dllm-block-size must be at least 1, not {block}")
    if steps < 1:
        raise ValueError(f"--dllm-steps must be at least 1, not {steps}")
    if threshold is not None and not 0.0 <= threshold <= 1.0:
        raise ValueError(f"--dllm-threshold must be within 0..1, not {threshold}")
    return DllmSettings(mask_token_id=mask, block_length=block, steps=min(steps, block), threshold=threshold)
