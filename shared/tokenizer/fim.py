"""Fill-in-the-middle: which models do it, and the prompt that asks for the middle.

A model does FIM when its tokenizer has one of the known sentinel triples (prefix, suffix,
middle); the prompt is prefix-suffix-middle order (PSM), which all of them were trained on.
"""

from __future__ import annotations

from shared.tokenizer.tokenizer import Tokenizer

# (prefix, suffix, middle) sentinels: StarCoder/Qwen-Coder, DeepSeek-Coder, CodeLlama, CodeGemma
SENTINELS: tuple[tuple[str, str, str], ...] = (
    ("<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>"),
    ("<fim_prefix>", "<fim_suffix>", "<fim_middle>"),
    ("<｜fim▁begin｜>", "<｜fim▁hole｜>", "<｜fim▁end｜>"),  # noqa: RUF001 (DeepSeek writes full-width bars)
    ("▁<PRE>", "▁<SUF>", "▁<MID>"),
)


def fim_sentinels(tok: Tokenizer) -> tuple[str, str, str] | None:
    """The model's FIM sentinels, or None when its tokenizer has none (no fill-in-the-middle)."""
    for triple in SENTINELS:
        if all(tok.token_to_id(t) is not None for t in triple):
            return triple
    return None


def fim_prompt(sentinels: tuple[str, str, str], prefix: str, suffix: str) -> str:
    pre, suf, mid = sentinels
    return f"{pre}{prefix}{suf}{suffix}{mid}"
