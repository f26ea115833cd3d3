"""The worker's --dllm-* flags (diffusion engine), named after SGLang's dLLM settings.

SGLang picks its algorithm with `--dllm-algorithm LowConfidence` and reads
`block_size` and `threshold` from the YAML file of `--dllm-algorithm-config`;
those two flags are SGLang's own and pass through unchanged with
`--engine sglang`. shoal's diffusion engine runs LowConfidence and takes the
same settings as flags: `--dllm-block-size` (LLaDA calls it block_length, so
`--dllm-block-length` works too), `--dllm-threshold`, and LLaDA's
`--dllm-steps` (iterations per block when no threshold is set).
"""

from __future__ import annotations

import argparse

import msgspec

from shared.config.flags import FlagGroup, flag


class DllmOptions(msgspec.Struct, frozen=True):
    """None: the model's own setting (config.json `shoal_diffusion`), else the engine's default."""

    block_length: int | None = None
    steps: int | None = None
    threshold: float | None = None
    mask_token_id: int | None = None


DLLM_FLAGS = FlagGroup(
    "diffusion engine (--engine diffusion; default: the model's shoal_diffusion config)", DllmOptions,
    flag("block_length", "--dllm-block-size", "--dllm-block-length", metavar="N",
         help="mask tokens appended and denoised together (SGLang: block_size)"),
    flag("steps", "--dllm-steps", metavar="N",
         help="denoising iterations per block; each unmasks block/steps tokens (LLaDA's steps)"),
    flag("threshold", "--dllm-threshold", metavar="P",
         help="instead: unmask every prediction more confident than P, at least one per iteration "
              "(SGLang LowConfidence's threshold)"),
    flag("mask_token_id", "--dllm-mask-token-id", metavar="ID",
         help="the mask token, for a model directory without a shoal_diffusion section"),
)


def dllm_options(ns: argparse.Namespace, engine: str, hint: str = "") -> DllmOptions:
    """The flags' options; ValueError (ending with `hint`) when they are given to another engine."""
    opts = DLLM_FLAGS.build(ns)
    if opts != DllmOptions() and engine != "diffusion":
        names = ", ".join(f.names[0] for f in DLLM_FLAGS.flags)
        raise ValueError(f"{names} are the diffusion engine's (--engine diffusion){hint}")
    return opts
