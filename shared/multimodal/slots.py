"""A fixed pool of equal slots in one tensor, registered with NIXL once: image embeddings live here
while they wait to be read (encoder) or arrive (reader)."""

from __future__ import annotations

import torch


class SlotPool:
    def __init__(self, num_slots: int, slot_bytes: int, device: str = "cpu") -> None:
        if num_slots < 1 or slot_bytes < 1:
            raise ValueError("a slot pool needs at least one slot of at least one byte")
        self.num_slots = num_slots
        self.slot_bytes = slot_bytes
        self.tensor = torch.zeros(num_slots, slot_bytes, dtype=torch.uint8, device=device)
        self._free = list(range(num_slots - 1, -1, -1))

    @property
    def num_free(self) -> int:
        return len(self._free)

    def alloc(self) -> int | None:
        return self._free.pop() if self._free else None

    def free(self, slot: int) -> None:
        self._free.append(slot)

    def addr(self, slot: int) -> int:
        return self.tensor.data_ptr() + slot * self.slot_bytes

    def put(self, slot: int, t: torch.Tensor) -> int:
        """Copy `t` into the slot; returns its size in bytes."""
        raw = t.detach().contiguous().view(-1).view(torch.uint8)
        if raw.numel() > self.slot_bytes:
            raise ValueError(f"{raw.numel()} bytes do not fit a slot of {self.slot_bytes}")
        self.tensor[slot, : raw.numel()].copy_(raw)
        return raw.numel()

    def get(self, slot: int, nbytes: int, dtype: torch.dtype, shape: list[int]) -> torch.Tensor:
        """A copy of the slot's first `nbytes` as a tensor of `dtype` and `shape`."""
        return self.tensor[slot, :nbytes].clone().view(dtype).view(*shape)


DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def dtype_name(dtype: torch.dtype) -> str:
    return {v: k for k, v in DTYPES.items()}[dtype]
