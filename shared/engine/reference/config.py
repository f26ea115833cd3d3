"""Typed configuration of the reference engine."""

from __future__ import annotations

import msgspec

from protocol.discovery import DEFAULT_PAGE_SIZE


class ReferenceConfig(msgspec.Struct, frozen=True):
    model_path: str
    device: str = "cpu"
    dtype: str = "auto"  # "auto": float32 on CPU, bfloat16 (or float16) on CUDA
    page_size: int = DEFAULT_PAGE_SIZE
    num_blocks: int = 0  # 0: as many as kv_cache_memory holds
    kv_cache_memory: int = 256 << 20  # bytes, used when num_blocks is 0
    host_kv_blocks: int = 0  # evicted KV blocks kept in host memory for reload (LRU); 0: none
    max_running: int = 64
    max_batched_tokens: int = 2048
    max_waiting: int = 1024
    context_length: int = 0  # 0: the model's max_position_embeddings
    num_threads: int = 0  # torch intra-op threads; 0: torch's default
    enable_lora: bool = False  # wrap the target projections so LoRA adapters can run (SGLang's --enable-lora)
    lora_paths: dict[str, str] = {}  # adapters loaded at start: name -> peft folder
    max_loras_per_batch: int = 8  # distinct adapters in one step
    max_lora_rank: int = 0  # 0: any rank
