"""Paged KV storage: one contiguous tensor per layer, `[num_blocks, 2, page_size, kv_heads, head_dim]`.

Block `b` of a layer is the byte range `[b * bytes_per_block, (b + 1) * bytes_per_block)`
of that layer's tensor (K then V), so a transfer library registers each tensor
once and moves whole blocks as single regions.
"""

from __future__ import annotations

import torch


class KvCache:
    def __init__(self, num_layers: int, num_blocks: int, page_size: int, num_kv_heads: int, head_dim: int,
                 dtype: torch.dtype, device: torch.device) -> None:
        shape = (num_blocks, 2, page_size, num_kv_heads, head_dim)
        self.tensors = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(num_layers)]
        self.page_size = page_size
        self.num_blocks = num_blocks
        self._flat = [t.view(num_blocks * 2 * page_size, num_kv_heads, head_dim) for t in self.tensors]

    @property
    def bytes_per_block(self) -> int:
        """Bytes of one block in one layer's tensor (K and V together)."""
        return self.tensors[0][0].nbytes

    @staticmethod
    def bytes_per_token_block(num_layers: int, page_size: int, num_kv_heads: int, head_dim: int,
                              dtype: torch.dtype) -> int:
        """Bytes one block takes over all layers (for sizing the cache from a memory budget)."""
        itemsize = torch.empty((), dtype=dtype).element_size()
        return num_layers * 2 * page_size * num_kv_heads * head_dim * itemsize

    def key_slots(self, block_ids: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
        """Row of each token's K in the flat view (its V is `page_size` rows further)."""
        return block_ids * (2 * self.page_size) + offsets

    def write(self, layer: int, key_slots: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
        flat = self._flat[layer]
        flat.index_copy_(0, key_slots, k)
        flat.index_copy_(0, key_slots + self.page_size, v)

    def gather(self, layer: int, block_table: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """K and V of whole blocks: block_table `[B, n]` gives `[B, n * page_size, kv_heads, head_dim]` each."""
        g = self.tensors[layer][block_table]  # [B, n, 2, ps, kvh, hd]
        b, n, _, ps, kvh, hd = g.shape
        return g[:, :, 0].reshape(b, n * ps, kvh, hd), g[:, :, 1].reshape(b, n * ps, kvh, hd)
