"""The small random Llama the reference engine's unit tests load (2 layers, vocabulary 320, eos 319): the
same weights every time (seed 0), made into `path` with transformers."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM

EOS = 319


def make_llama(path: Path) -> Path:
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=320, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                      bos_token_id=1, eos_token_id=EOS, pad_token_id=0, initializer_range=0.5)
    LlamaForCausalLM(cfg).save_pretrained(path)
    return path
