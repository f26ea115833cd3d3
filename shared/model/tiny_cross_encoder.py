"""A tiny cross-encoder (BertForSequenceClassification, one label) with seeded random weights, made offline.

Its tokenizer is a BERT WordPiece one built with `tokenizers`: lowercase letters, digits and punctuation,
each also as a `##` continuation, so any ASCII text tokenizes (other characters become [UNK]). Pairs
are joined as BERT joins them: `[CLS] a [SEP] b [SEP]`, segment ids 0 then 1. Scores are not meaningful,
but they are deterministic for a seed, which is what tests comparing against transformers need.
"""

from __future__ import annotations

import json
import string
from pathlib import Path

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def make_tiny_cross_encoder(out_dir: Path | str, *, seed: int = 0, hidden_size: int = 32, num_layers: int = 2,
                            num_heads: int = 2, max_position_embeddings: int = 128) -> Path:
    """Write the model, tokenizer and configs to `out_dir` (created) and return its path."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    vocab = _vocab()
    _write_tokenizer(out, vocab, max_position_embeddings)
    cfg = BertConfig(vocab_size=len(vocab), hidden_size=hidden_size, num_hidden_layers=num_layers,
                     num_attention_heads=num_heads, intermediate_size=hidden_size * 2,
                     max_position_embeddings=max_position_embeddings, num_labels=1, pad_token_id=0,
                     type_vocab_size=2)
    cfg.architectures = ["BertForSequenceClassification"]
    torch.manual_seed(seed)
    model = BertForSequenceClassification(cfg).float().eval()
    with torch.no_grad():  # spread the scores so that their order is clear
        model.classifier.weight.mul_(100.0)
    model.save_pretrained(out)
    return out


def _vocab() -> list[str]:
    chars = string.ascii_lowercase + string.digits + string.punctuation
    return [*SPECIALS, *chars, *(f"##{c}" for c in chars)]


def _write_tokenizer(out: Path, vocab: list[str], max_length: int) -> None:
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    tok = Tokenizer(models.WordPiece({t: i for i, t in enumerate(vocab)}, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", vocab.index("[CLS]")), ("[SEP]", vocab.index("[SEP]"))])
    tok.decoder = decoders.WordPiece()
    tok.add_special_tokens(SPECIALS)
    (out / "tokenizer.json").write_text(tok.to_str(pretty=True))
    (out / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "BertTokenizerFast", "do_lower_case": True, "cls_token": "[CLS]", "sep_token": "[SEP]",
        "pad_token": "[PAD]", "unk_token": "[UNK]", "mask_token": "[MASK]", "model_max_length": max_length,
    }, indent=1))
