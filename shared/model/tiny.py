"""The default model: a tiny Llama with seeded random weights and a byte-level tokenizer.

Made offline (no hub), deterministic for a seed; outputs are not prose. Every
UTF-8 byte is one token (256 byte symbols, no merges) plus a few special tokens.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

SPECIALS = ["<|bos|>", "<|eos|>", "<|user|>", "<|assistant|>", "<|system|>"]
CHAT_TEMPLATE = ("{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}{% endfor %}"
                 "{% if add_generation_prompt %}<|assistant|>{% endif %}")
MARKER = ".shoal-tiny-complete"


def _tokenizer_json() -> str:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    order = sorted(alphabet, key=lambda ch: _byte_of(ch))
    vocab = {ch: i for i, ch in enumerate(order)}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(SPECIALS)
    return tok.to_str()


def _byte_of(ch: str) -> int:
    """The GPT-2 byte-to-unicode map, inverted: byte symbols sort by the byte they stand for."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    code = ord(ch)
    if code in printable:
        return code
    return sorted(set(range(256)) - set(printable))[code - 256]


def make_tiny(out_dir: Path | str, *, seed: int = 0, hidden_size: int = 64, num_layers: int = 2,
              num_heads: int = 4, num_kv_heads: int = 2, intermediate_size: int = 128,
              max_position_embeddings: int = 4096) -> Path:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    out = Path(out_dir)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    (out / "tokenizer.json").write_text(_tokenizer_json())
    bos, eos = 256, 257
    (out / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "PreTrainedTokenizerFast", "bos_token": SPECIALS[0], "eos_token": SPECIALS[1],
        "add_bos_token": False, "model_max_length": max_position_embeddings, "chat_template": CHAT_TEMPLATE,
    }, indent=1))
    (out / "chat_template.jinja").write_text(CHAT_TEMPLATE)
    cfg = LlamaConfig(
        vocab_size=256 + len(SPECIALS), hidden_size=hidden_size, intermediate_size=intermediate_size,
        num_hidden_layers=num_layers, num_attention_heads=num_heads, num_key_value_heads=num_kv_heads,
        head_dim=hidden_size // num_heads, max_position_embeddings=max_position_embeddings,
        bos_token_id=bos, eos_token_id=eos, tie_word_embeddings=False, torch_dtype="float32",
    )
    cfg.architectures = ["LlamaForCausalLM"]
    torch.manual_seed(seed)
    model = LlamaForCausalLM(cfg)
    with torch.no_grad():  # larger logits spread: greedy ties become vanishingly rare
        model.lm_head.weight.mul_(8.0)
    model.save_pretrained(out, safe_serialization=True)
    (out / "generation_config.json").write_text(json.dumps({"bos_token_id": bos, "eos_token_id": eos}))
    (out / MARKER).write_text("ok")
    return out


def ensure_tiny(out_dir: Path | str, seed: int = 0) -> Path:
    out = Path(out_dir)
    if (out / MARKER).exists():
        return out
    return make_tiny(out, seed=seed)
