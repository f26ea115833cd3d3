"""Pooling of hidden states into one vector per input, as a model's sentence-transformers config asks.

sentence-transformers describes a model's pipeline in `modules.json`: a
`Pooling` module (its folder's `config.json` says mean, CLS or last token)
and, when the vectors are unit length, a `Normalize` module. Without those
files the caller's default applies (last token for decoders, as SGLang).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

MODES = ("mean", "cls", "lasttoken")
_CONFIG_KEYS = {"pooling_mode_mean_tokens": "mean", "pooling_mode_cls_token": "cls",
                "pooling_mode_lasttoken": "lasttoken"}


@dataclass(frozen=True)
class PoolingSpec:
    mode: str = "lasttoken"  # one of MODES
    normalize: bool = False  # the model's own pipeline ends with Normalize


def read_pooling(model_dir: str | Path, default: PoolingSpec) -> PoolingSpec:
    """The pooling of `model_dir`'s sentence-transformers config, or `default` when it has none."""
    root = Path(model_dir)
    modules_file = root / "modules.json"
    if not modules_file.is_file():
        return default
    modules = json.loads(modules_file.read_text())
    kinds = {m.get("type", "").rsplit(".", 1)[-1]: m.get("path", "") for m in modules}
    mode = default.mode
    if "Pooling" in kinds:
        cfg = json.loads((root / kinds["Pooling"] / "config.json").read_text())
        chosen = [name for key, name in _CONFIG_KEYS.items() if cfg.get(key)]
        others = [k for k, v in cfg.items() if v and k.startswith("pooling_mode_") and k not in _CONFIG_KEYS]
        if len(chosen) != 1 or others:
            raise ValueError(f"{root}: pooling {cfg} is not one of {', '.join(MODES)}")
        mode = chosen[0]
    return PoolingSpec(mode=mode, normalize="Normalize" in kinds)


def pool(hidden: torch.Tensor, mask: torch.Tensor, spec: PoolingSpec, normalize: bool) -> torch.Tensor:
    """`[batch, seq, hidden]` right-padded states and their `[batch, seq]` mask -> `[batch, hidden]` float."""
    hidden = hidden.float()
    if spec.mode == "cls":
        out = hidden[:, 0]
    elif spec.mode == "mean":
        m = mask.to(hidden.dtype)[:, :, None]
        out = (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)
    else:
        last = mask.sum(1) - 1
        out = hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
    return F.normalize(out, p=2, dim=-1) if normalize or spec.normalize else out


def padded_batch(batch: list[list[int]], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ids (pad 0) and the attention mask of a batch of inputs."""
    width = max(len(x) for x in batch)
    ids = torch.zeros(len(batch), width, dtype=torch.long)
    mask = torch.zeros(len(batch), width, dtype=torch.long)
    for row, x in enumerate(batch):
        ids[row, : len(x)] = torch.tensor(x)
        mask[row, : len(x)] = 1
    return ids.to(device), mask.to(device)


def embed_batches(inputs: list[list[int]], max_batch_tokens: int) -> list[list[list[int]]]:
    """Consecutive inputs grouped so that each group, padded to its longest, stays within the budget."""
    batches: list[list[list[int]]] = []
    width = 0
    for x in inputs:
        if batches and max(width, len(x)) * (len(batches[-1]) + 1) <= max_batch_tokens:
            batches[-1].append(x)
            width = max(width, len(x))
        else:
            batches.append([x])
            width = len(x)
    return batches
