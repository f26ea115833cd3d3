"""A Llama-family checkpoint run with bidirectional (non-causal) attention: a masked-diffusion LM's forward.

Every position attends to every other position of its own sequence. Several
sequences of different lengths run as one right-padded batch; a key mask keeps
each sequence from seeing the padding (and so from seeing its neighbours).
There is no KV cache: with full bidirectional attention a committed token
changes every position's keys and values, so each iteration recomputes the
whole sequence (as LLaDA does without approximate caching).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from shared.engine.reference.model_runner import SUPPORTED, UnsupportedModelError, eos_token_ids, resolve_dtype


@dataclass(frozen=True)
class Row:
    """One sequence of a batch: all its tokens, and the span whose logits are wanted."""

    token_ids: list[int]
    start: int
    length: int


class BidirectionalLM:
    def __init__(self, model_path: str, device: str = "cpu", dtype: str = "auto") -> None:
        from transformers import AutoConfig, AutoModelForCausalLM

        self.device = torch.device(device)
        self.dtype = resolve_dtype(dtype, self.device)
        hf_cfg = AutoConfig.from_pretrained(model_path)
        kind = getattr(hf_cfg, "model_type", "?")
        if kind not in SUPPORTED:
            raise UnsupportedModelError(f"the diffusion engine runs Llama-family weights ({', '.join(SUPPORTED)}) "
                                        f"with bidirectional attention; this model is {kind!r}")
        model = AutoModelForCausalLM.from_pretrained(model_path, dtype=self.dtype)
        self.model = model.to(self.device).eval()
        self.hf_config = hf_cfg
        self.vocab_size = int(hf_cfg.vocab_size)
        self.num_heads = hf_cfg.num_attention_heads
        self.num_kv_heads = getattr(hf_cfg, "num_key_value_heads", None) or self.num_heads
        self.head_dim = getattr(hf_cfg, "head_dim", None) or hf_cfg.hidden_size // self.num_heads
        self.eos_ids = eos_token_ids(self.model)
        self.max_position = int(getattr(hf_cfg, "max_position_embeddings", 4096))

    @torch.inference_mode()
    def span_logits(self, rows: list[Row]) -> list[torch.Tensor]:
        """Float32 logits `[row.length, vocab]` for each row's span, every row in one forward."""
        width = max(len(r.token_ids) for r in rows)
        ids = torch.zeros(len(rows), width, dtype=torch.long)
        lengths = torch.tensor([len(r.token_ids) for r in rows])
        for i, r in enumerate(rows):
            ids[i, : len(r.token_ids)] = torch.tensor(r.token_ids)
        ids, lengths = ids.to(self.device), lengths.to(self.device)
        positions = torch.arange(width, device=self.device)
        keys = (positions[None, :] < lengths[:, None])[:, None, None, :]  # [rows, 1, 1, keys]
        inner = self.model.model
        x = inner.embed_tokens(ids)
        cos, sin = inner.rotary_emb(x, positions[None, :].expand(len(rows), width))
        rope = (cos[:, :, None, :], sin[:, :, None, :])
        for layer in inner.layers:
            x = x + self._attention(layer.self_attn, layer.input_layernorm(x), rope, keys)
            x = x + layer.mlp(layer.post_attention_layernorm(x))
        out = []
        for i, r in enumerate(rows):
            h = inner.norm(x[i, r.start : r.start + r.length])
            out.append(self.model.lm_head(h).float())
        return out

    def _attention(self, attn: torch.nn.Module, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor],
                   keys: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        q = attn.q_proj(x).view(b, t, self.num_heads, self.head_dim)
        k = attn.k_proj(x).view(b, t, self.num_kv_heads, self.head_dim)
        v = attn.v_proj(x).view(b, t, self.num_kv_heads, self.head_dim)
        if hasattr(attn, "q_norm"):  # Qwen3
            q, k = attn.q_norm(q), attn.k_norm(k)
        q, k = _rotate(q, *rope), _rotate(k, *rope)
        o = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                           attn_mask=keys, is_causal=False, scale=attn.scaling, enable_gqa=True)
        return attn.o_proj(o.transpose(1, 2).reshape(b, t, self.num_heads * self.head_dim))


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + rotated * sin
