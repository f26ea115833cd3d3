"""LoRA adapters on the reference engine: peft folders loaded at run time, several adapters in one step.

Each target projection (q/k/v/o, gate/up/down) of every decoder layer is
wrapped in a `LoraLinear`: the base projection for every row, plus
`scale * B @ (A @ x)` for the rows of each adapter in the step. Rows are
grouped by adapter, so a step mixing the base model and N adapters costs the
base matmuls plus N thin low-rank products (rank r << hidden).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file

TARGETS = {"q_proj": "self_attn", "k_proj": "self_attn", "v_proj": "self_attn", "o_proj": "self_attn",
           "gate_proj": "mlp", "up_proj": "mlp", "down_proj": "mlp"}


class LoraError(ValueError):
    """An adapter that cannot be loaded (bad folder, unsupported config, rank too large) or is not loaded."""


@dataclass
class Adapter:
    name: str
    path: str
    rank: int
    weights: dict[tuple[int, str], tuple[torch.Tensor, torch.Tensor]]  # (layer, module) -> (A, scale * B)


@dataclass
class _StepGroups:
    """Which rows of the current step run with which adapter (the base model's rows are in none)."""

    groups: list[tuple[Adapter, torch.Tensor | None]] = field(default_factory=list)  # None: every row


class LoraLinear(torch.nn.Module):
    """A base projection plus the low-rank update of each adapter on its rows of the step."""

    def __init__(self, base: torch.nn.Module, key: tuple[int, str], step: _StepGroups) -> None:
        super().__init__()
        self.base = base
        self.key = key
        self._step = step

    @property
    def weight(self) -> torch.Tensor:
        return self.base.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base(x)
        for adapter, rows in self._step.groups:
            w = adapter.weights.get(self.key)
            if w is None:
                continue
            a, b = w
            if rows is None:
                y = y + (x @ a.T) @ b.T
            else:
                y = y.index_add(0, rows, (x[rows] @ a.T) @ b.T)
        return y


def read_adapter(name: str, path: str, num_layers: int, max_rank: int, dtype: torch.dtype,
                 device: torch.device) -> Adapter:
    """A peft LoRA folder (adapter_config.json, adapter_model.safetensors) as per-module (A, scale * B)."""
    root = Path(path)
    try:
        cfg = json.loads((root / "adapter_config.json").read_text())
        tensors = load_file(str(root / "adapter_model.safetensors"))
    except (OSError, ValueError) as e:
        raise LoraError(f"adapter {name!r}: {path} is not a peft LoRA folder ({e})") from e
    if cfg.get("peft_type", "LORA") != "LORA" or cfg.get("rank_pattern") or cfg.get("alpha_pattern"):
        raise LoraError(f"adapter {name!r}: only plain LoRA (one rank, one alpha) is supported")
    rank = int(cfg["r"])
    if max_rank and rank > max_rank:
        raise LoraError(f"adapter {name!r} has rank {rank}, above --max-lora-rank {max_rank}")
    alpha = float(cfg.get("lora_alpha", rank))
    scale = alpha / math.sqrt(rank) if cfg.get("use_rslora") else alpha / rank
    weights: dict[tuple[int, str], tuple[torch.Tensor, torch.Tensor]] = {}
    for key, a in tensors.items():
        if not key.endswith("lora_A.weight"):
            continue
        parts = key.split(".")
        layer, module = int(parts[parts.index("layers") + 1]), parts[-3]
        if module not in TARGETS or layer >= num_layers:
            raise LoraError(f"adapter {name!r}: {key} is not a supported target ({', '.join(TARGETS)})")
        b = tensors[key.replace("lora_A", "lora_B")]
        weights[(layer, module)] = (a.to(device, dtype), (b.float() * scale).to(device, dtype))
    if not weights:
        raise LoraError(f"adapter {name!r}: no LoRA weights in {path}")
    return Adapter(name, path, rank, weights)


class LoraManager:
    """The loaded adapters of one model and the per-step grouping its LoraLinear wrappers read."""

    def __init__(self, layers: Sequence[torch.nn.Module], max_rank: int, dtype: torch.dtype,
                 device: torch.device) -> None:
        self.adapters: dict[str, Adapter] = {}
        self.max_rank, self.dtype, self.device = max_rank, dtype, device
        self.num_layers = len(layers)
        self._step = _StepGroups()
        for i, layer in enumerate(layers):
            for module, parent_name in TARGETS.items():
                parent = getattr(layer, parent_name)
                setattr(parent, module, LoraLinear(getattr(parent, module), (i, module), self._step))

    def load(self, name: str, path: str) -> Adapter:
        if name in self.adapters:
            raise LoraError(f"adapter {name!r} is loaded already")
        adapter = read_adapter(name, path, self.num_layers, self.max_rank, self.dtype, self.device)
        self.adapters[name] = adapter
        return adapter

    def unload(self, name: str) -> None:
        if self.adapters.pop(name, None) is None:
            raise LoraError(f"adapter {name!r} is not loaded")

    def begin_step(self, rows: Sequence[tuple[str, int]]) -> None:
        """The step's rows in order, as (adapter name or "", number of rows)."""
        by_name: dict[str, list[int]] = {}
        start = 0
        for name, n in rows:
            if name:
                by_name.setdefault(name, []).extend(range(start, start + n))
            start += n
        self._step.groups = [
            (self.adapters[name], None if len(idx) == start else torch.tensor(idx, device=self.device))
            for name, idx in by_name.items()]

    def end_step(self) -> None:
        self._step.groups = []
