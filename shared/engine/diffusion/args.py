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
from typing import Any

FLAGS = ("--dllm-block-size", "--dllm-block-length", "--dllm-steps", "--dllm-threshold", "--dllm-mask-token-id")


def add_dllm_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("diffusion engine (--engine diffusion; default: the model's shoal_diffusion config)")
    g.add_argument("--dllm-block-size", "--dllm-block-length", dest="dllm_block_length", type=int, default=None,
                   metavar="N", help="mask tokens appended and denoised together (SGLang: block_size)")
    g.add_argument("--dllm-steps", type=int, default=None, metavar="N",
                   help="denoising iterations per block; each unmasks block/steps tokens (LLaDA's steps)")
    g.add_argument("--dllm-threshold", type=float, default=None, metavar="P",
                   help="instead: unmask every prediction more confident than P, at least one per iteration "
                        "(SGLang LowConfidence's threshold)")
    g.add_argument("--dllm-mask-token-id", type=int, default=None, metavar="ID",
                   help="the mask token, for a model directory without a shoal_diffusion section")


def dllm_options(ns: argparse.Namespace) -> dict[str, Any]:
    """EngineOptions fields from the flags; ValueError when they are given to another engine."""
    given = {k: getattr(ns, k) for k in ("dllm_block_length", "dllm_steps", "dllm_threshold", "dllm_mask_token_id")
             if getattr(ns, k) is not None}
    if given and ns.engine != "diffusion":
        hint = (" (SGLang takes block_size and threshold from the YAML file of its own --dllm-algorithm-config, "
                "which passes through)" if ns.engine == "sglang" else "")
        raise ValueError(f"{', '.join(FLAGS[:4])} are the diffusion engine's (--engine diffusion){hint}")
    return given
