"""The `shoal_diffusion` section of a model's config.json: what makes a model a masked-diffusion LM.

    "shoal_diffusion": {"mask_token_id": 261, "block_length": 8, "steps": 8, "threshold": null}

`mask_token_id` is the token a masked position holds; `block_length` masked
tokens are appended to the sequence at a time and denoised in `steps`
iterations; a `threshold` (0..1) commits every prediction at least that
confident instead (see shared/engine/diffusion/unmask.py). A model directory
without the section can still be served when `--dllm-mask-token-id` names the
mask token (or the tokenizer has a `<|mask|>` / `<|mdm_mask|>` / `[MASK]` token).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import msgspec

SECTION = "shoal_diffusion"
MASK_TOKEN_NAMES = ("<|mask|>", "<|mdm_mask|>", "[MASK]", "<mask>")
DEFAULT_BLOCK_LENGTH = 8
DEFAULT_STEPS = 8


class DiffusionDefaults(msgspec.Struct, frozen=True):
    """A model's own diffusion settings (the worker's --dllm-* flags override them)."""

    mask_token_id: int | None = None
    block_length: int = DEFAULT_BLOCK_LENGTH
    steps: int = DEFAULT_STEPS
    threshold: float | None = None


def diffusion_section(mask_token_id: int, block_length: int = DEFAULT_BLOCK_LENGTH, steps: int = DEFAULT_STEPS,
                      threshold: float | None = None) -> dict[str, Any]:
    """The config.json section make-tiny writes."""
    return {"mask_token_id": mask_token_id, "block_length": block_length, "steps": steps, "threshold": threshold}


def read_diffusion_defaults(model_dir: Path | str) -> DiffusionDefaults:
    """The model's section, or defaults with the mask token found in its tokenizer (None if none)."""
    d = Path(model_dir)
    cfg = _json(d / "config.json")
    section = cfg.get(SECTION)
    if isinstance(section, dict):
        return msgspec.convert(section, DiffusionDefaults)
    mask = cfg.get("mask_token_id")
    return DiffusionDefaults(mask_token_id=mask if isinstance(mask, int) else _mask_from_tokenizer(d))


def _mask_from_tokenizer(d: Path) -> int | None:
    added = _json(d / "tokenizer.json").get("added_tokens", [])
    ids = {t.get("content"): t.get("id") for t in added if isinstance(t, dict)}
    for name in MASK_TOKEN_NAMES:
        if isinstance(ids.get(name), int):
            return int(ids[name])
    return None


def _json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}
