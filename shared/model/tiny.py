"""The default model: a tiny Llama with seeded random weights and a byte-level tokenizer.

Made offline (no hub), deterministic for a seed; outputs are not prose. Every
UTF-8 byte is one token (256 byte symbols, no merges), then a few special tokens.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from shared.model.diffusion import diffusion_section

SPECIALS = ["<|bos|>", "<|eos|>", "<|user|>", "<|assistant|>", "<|system|>"]
BOS_ID, EOS_ID = 256, 257
CHAT_TEMPLATE = ("{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}{% endfor %}"
                 "{% if add_generation_prompt %}<|assistant|>{% endif %}")
MARKER = ".shoal-tiny-complete"  # written last: its absence means a half-written directory
FILES = ("config.json", "generation_config.json", "model.safetensors", "tokenizer.json",
         "tokenizer_config.json", "chat_template.jinja", MARKER)
LOGIT_SCALE = 8.0  # spreads the logits so greedy ties are vanishingly rare
MASK_TOKEN = "<|mask|>"  # diffusion models only: the last special token


@dataclass(frozen=True)
class TinySpec:
    seed: int = 0
    vocab_extra: int = 0  # extra special tokens <|reserved_i|>, for a larger vocabulary
    hidden_size: int = 64
    num_layers: int = 2
    num_heads: int = 4
    num_kv_heads: int = 2
    intermediate_size: int = 128
    max_position_embeddings: int = 4096
    diffusion: bool = False  # a masked-diffusion LM: a mask token and a shoal_diffusion config section

    @property
    def specials(self) -> list[str]:
        mask = [MASK_TOKEN] if self.diffusion else []
        return [*SPECIALS, *(f"<|reserved_{i}|>" for i in range(self.vocab_extra)), *mask]


def make_tiny(out_dir: Path | str, *, seed: int = 0, vocab_extra: int = 0, hidden_size: int = 64,
              num_layers: int = 2, num_heads: int = 4, num_kv_heads: int = 2, intermediate_size: int = 128,
              max_position_embeddings: int = 4096, diffusion: bool = False) -> Path:
    """Write the tiny model to `out_dir` (replacing an earlier tiny model there) and return its path."""
    spec = TinySpec(seed, vocab_extra, hidden_size, num_layers, num_heads, num_kv_heads, intermediate_size,
                    max_position_embeddings, diffusion)
    out = Path(out_dir)
    _check_replaceable(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
    try:
        tmp.chmod(0o755)
        _write_tokenizer(tmp, spec)
        _write_model(tmp, spec)
        (tmp / MARKER).write_text(json.dumps(asdict(spec), sort_keys=True))
        shutil.rmtree(out, ignore_errors=True)
        tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def ensure_tiny(out_dir: Path | str, *, seed: int = 0, **kwargs: Any) -> Path:
    """The tiny model at `out_dir`, made only if missing, half-written or made with other settings."""
    out = Path(out_dir)
    want = json.dumps(asdict(TinySpec(seed=seed, **kwargs)), sort_keys=True)
    marker = out / MARKER
    if marker.exists() and marker.read_text() == want:
        return out
    return make_tiny(out, seed=seed, **kwargs)


def _check_replaceable(out: Path) -> None:
    """Refuse to delete a directory holding anything but a (possibly half-written) tiny model."""
    if out.exists() and (not out.is_dir() or any(p.name not in FILES for p in out.iterdir())):
        raise FileExistsError(f"{out} exists and is not a tiny model directory")


def _write_tokenizer(out: Path, spec: TinySpec) -> None:
    (out / "tokenizer.json").write_text(_tokenizer_json(spec.specials))
    (out / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "PreTrainedTokenizerFast", "bos_token": SPECIALS[0], "eos_token": SPECIALS[1],
        "add_bos_token": False, "add_eos_token": False, "clean_up_tokenization_spaces": False,
        "model_max_length": spec.max_position_embeddings, "chat_template": CHAT_TEMPLATE,
    }, indent=1))
    (out / "chat_template.jinja").write_text(CHAT_TEMPLATE)


def _tokenizer_json(specials: list[str]) -> str:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet(), key=_byte_of)
    tok = Tokenizer(models.BPE(vocab={ch: i for i, ch in enumerate(alphabet)}, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(specials)
    return tok.to_str(pretty=True)


def _byte_of(symbol: str) -> int:
    """Which byte a byte-level alphabet symbol stands for (GPT-2's byte-to-unicode map, inverted)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    code = ord(symbol)
    if code in printable:
        return code
    return sorted(set(range(256)) - set(printable))[code - 256]


def _write_model(out: Path, spec: TinySpec) -> None:
    import torch
    from safetensors.torch import save_file
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(
        vocab_size=256 + len(spec.specials), hidden_size=spec.hidden_size,
        intermediate_size=spec.intermediate_size, num_hidden_layers=spec.num_layers,
        num_attention_heads=spec.num_heads, num_key_value_heads=spec.num_kv_heads,
        head_dim=spec.hidden_size // spec.num_heads, max_position_embeddings=spec.max_position_embeddings,
        bos_token_id=BOS_ID, eos_token_id=EOS_ID, tie_word_embeddings=False, torch_dtype="float32",
    )
    cfg.architectures = ["LlamaForCausalLM"]
    if spec.diffusion:
        cfg.shoal_diffusion = diffusion_section(mask_token_id=256 + len(spec.specials) - 1)
    torch.manual_seed(spec.seed)
    model = LlamaForCausalLM(cfg).float()
    with torch.no_grad():
        model.lm_head.weight.mul_(LOGIT_SCALE)
    weights = {k: v.detach().contiguous() for k, v in sorted(model.state_dict().items())}
    save_file(weights, str(out / "model.safetensors"), metadata={"format": "pt"})
    (out / "model.safetensors").chmod(0o644)
    cfg.to_json_file(str(out / "config.json"), use_diff=False)
    GenerationConfig(bos_token_id=BOS_ID, eos_token_id=EOS_ID).to_json_file(str(out / "generation_config.json"))
