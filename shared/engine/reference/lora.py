"""LoRA adapters on the reference engine: peft folders loaded at run time, several adapters in one step.

Each target projection (q/k/v/o, gate/up/down) of every decoder layer is
wrapped in a `LoraLinear`: the base projection for every row, plus
`scale * B @ (A @ x)` with each row's own adapter. The loaded adapters are
concatenated per module (slot 0 is zeros, for rows on the base model): A as
[slots * rank, in], B as [out, slots * rank]. A step costs the base matmuls
plus two small dense ones per module, whatever the mix: x @ A_all gives every
slot's low-rank projection, a per-row mask keeps the row's own slot, and
@ B_all adds that slot's update (no per-row weight gathers, no loops).
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
class _Step:
    """The current step: each row's adapter slot (0: the base model) and the stacked weights of every slot."""

    mask: torch.Tensor | None = None  # [rows, slots * rank]: 1 on each row's own slot; None: no adapter rows
    stacks: dict[tuple[int, str], tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)


class LoraLinear(torch.nn.Module):
    """A base projection plus, on each row, the low-rank update of that row's adapter."""

    def __init__(self, base: torch.nn.Module, key: tuple[int, str], step: _Step) -> None:
        super().__init__()
        self.base = base
        self.key = key
        self._step = step

    @property
    def weight(self) -> torch.Tensor:
        return self.base.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base(x)
        st = self._step
        stack = st.stacks.get(self.key)
        if st.mask is None or stack is None:
            return y
        a, b = stack  # [slots * r, in], [out, slots * r]; slot 0 is zeros
        xa = (x @ a.T).mul_(st.mask)
        if y.dim() == 2:
            return y.addmm_(xa, b.T)  # the update added in the same kernel
        return y + xa @ b.T


MAX_RANK = 256  # with --max-lora-rank 0


def read_adapter(name: str, path: str, dims: dict[str, tuple[int, int]], num_layers: int, max_rank: int,
                 dtype: torch.dtype, device: torch.device) -> Adapter:
    """A peft LoRA folder (adapter_config.json, adapter_model.safetensors) as per-module (A, scale * B).

    Checked against the model before anything uses it: every tensor a supported target of an existing
    layer, A as [rank, in] and B as [out, rank] of that module, one rank within the cap, finite values;
    LoraError (a 400) otherwise. `dims`: each target module's (in, out) features.
    """
    root = Path(path)
    try:
        cfg = json.loads((root / "adapter_config.json").read_text())
        tensors = load_file(str(root / "adapter_model.safetensors"))
        rank = int(cfg["r"])
        alpha = float(cfg.get("lora_alpha", rank))
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise LoraError(f"adapter {name!r} is not a readable peft LoRA folder ({type(e).__name__})") from e
    if cfg.get("peft_type", "LORA") != "LORA" or cfg.get("rank_pattern") or cfg.get("alpha_pattern"):
        raise LoraError(f"adapter {name!r}: only plain LoRA (one rank, one alpha) is supported")
    cap = max_rank or MAX_RANK
    if not 0 < rank <= cap:
        raise LoraError(f"adapter {name!r} has rank {rank}; ranks 1 to {cap} are served (--max-lora-rank)")
    if not math.isfinite(alpha):
        raise LoraError(f"adapter {name!r}: lora_alpha is not a number")
    scale = alpha / math.sqrt(rank) if cfg.get("use_rslora") else alpha / rank
    weights: dict[tuple[int, str], tuple[torch.Tensor, torch.Tensor]] = {}
    for key, a in tensors.items():
        if "lora_B" in key:
            continue
        parts = key.split(".")
        try:
            layer, module = int(parts[parts.index("layers") + 1]), parts[-3]
        except (ValueError, IndexError):
            raise LoraError(f"adapter {name!r}: tensor {key[:100]!r} is not a LoRA weight of a decoder layer") \
                from None
        if not key.endswith("lora_A.weight") or module not in TARGETS or not 0 <= layer < num_layers:
            raise LoraError(f"adapter {name!r}: {key[:100]} is not a supported target ({', '.join(TARGETS)})")
        b = tensors.get(key.replace("lora_A", "lora_B"))
        d_in, d_out = dims[module]
        if b is None or tuple(a.shape) != (rank, d_in) or tuple(b.shape) != (d_out, rank):
            got = f"A {tuple(a.shape)}, B {tuple(b.shape) if b is not None else 'missing'}"
            raise LoraError(f"adapter {name!r}: {module} of layer {layer} has {got}; the model needs "
                            f"A ({rank}, {d_in}) and B ({d_out}, {rank})")
        if not a.is_floating_point() or not b.is_floating_point() \
                or not bool(torch.isfinite(a).all() and torch.isfinite(b).all()):
            raise LoraError(f"adapter {name!r}: {module} of layer {layer} is not finite floating point")
        weights[(layer, module)] = (a.to(device, dtype), (b.float() * scale).to(device, dtype))
    if not weights:
        raise LoraError(f"adapter {name!r}: no LoRA weights in its folder")
    return Adapter(name, path, rank, weights)


class LoraManager:
    """The loaded adapters of one model, stacked per target module, and the step's row-to-adapter map."""

    def __init__(self, layers: Sequence[torch.nn.Module], max_rank: int, dtype: torch.dtype,
                 device: torch.device) -> None:
        self.adapters: dict[str, Adapter] = {}
        self.max_rank, self.dtype, self.device = max_rank, dtype, device
        self.num_layers = len(layers)
        self._slot: dict[str, int] = {}
        self._rank = 1
        self._step = _Step()
        self.dims: dict[str, tuple[int, int]] = {}  # module -> (in, out) features
        for i, layer in enumerate(layers):
            for module, parent_name in TARGETS.items():
                parent = getattr(layer, parent_name)
                w = getattr(parent, module).weight
                self.dims[module] = (int(w.shape[1]), int(w.shape[0]))
                setattr(parent, module, LoraLinear(getattr(parent, module), (i, module), self._step))

    def read(self, name: str, path: str) -> Adapter:
        """Read and check an adapter (any thread: touches no served state)."""
        return read_adapter(name, path, self.dims, self.num_layers, self.max_rank, self.dtype, self.device)

    def install(self, adapter: Adapter) -> None:
        """Serve a read adapter (the model thread, between steps); a failure leaves the others as they were."""
        if adapter.name in self.adapters:
            raise LoraError(f"adapter {adapter.name!r} is loaded already")
        self.adapters[adapter.name] = adapter
        try:
            self._restack()
        except Exception as e:
            del self.adapters[adapter.name]
            self._restack()
            raise LoraError(f"adapter {adapter.name!r} does not fit the model ({type(e).__name__})") from e

    def load(self, name: str, path: str) -> Adapter:
        adapter = self.read(name, path)
        self.install(adapter)
        return adapter

    def unload(self, name: str) -> None:
        if self.adapters.pop(name, None) is None:
            raise LoraError(f"adapter {name!r} is not loaded")
        self._restack()

    def begin_step(self, rows: Sequence[tuple[str, int]]) -> None:
        """The step's rows in order, as (adapter name or "", number of rows)."""
        slots = [self._slot[name] if name else 0 for name, n in rows for _ in range(n)]
        if not any(slots):
            return
        col_slot = torch.arange((len(self._slot) + 1) * self._rank, device=self.device) // self._rank
        row_slot = torch.tensor(slots, device=self.device)
        self._step.mask = (col_slot[None, :] == row_slot[:, None]).to(self.dtype)

    def end_step(self) -> None:
        self._step.mask = None

    def _restack(self) -> None:
        """Slot i + 1 holds the i-th loaded adapter, ranks zero-padded to the largest; slot 0 is zeros."""
        names = list(self.adapters)
        self._slot = {n: i + 1 for i, n in enumerate(names)}
        rank = max((a.rank for a in self.adapters.values()), default=0)
        self._rank = max(rank, 1)
        stacks: dict[tuple[int, str], tuple[torch.Tensor, torch.Tensor]] = {}
        for key in {k for a in self.adapters.values() for k in a.weights}:
            a0, b0 = next(a.weights[key] for a in self.adapters.values() if key in a.weights)
            a_st = torch.zeros(len(names) + 1, rank, a0.shape[1], dtype=self.dtype, device=self.device)
            b_st = torch.zeros(len(names) + 1, b0.shape[0], rank, dtype=self.dtype, device=self.device)
            for n, adapter in self.adapters.items():
                if key in adapter.weights:
                    a, b = adapter.weights[key]
                    a_st[self._slot[n], : a.shape[0]] = a
                    b_st[self._slot[n], :, : b.shape[1]] = b
            # [slots * r, in] and [out, slots * r]: column slot * r + j of one is row slot * r + j of the other
            stacks[key] = (a_st.reshape(-1, a_st.shape[2]), b_st.permute(1, 0, 2).reshape(b_st.shape[1], -1))
        self._step.stacks = stacks
