"""Reasoning formats by SGLang's `--reasoning-parser` names."""

from __future__ import annotations

from shared.parsers.output import ReasoningFormat

# name -> (opening, closing, forced: the chat template opens the reasoning, so the output starts inside it)
_FORMATS: dict[str, tuple[str, str, bool]] = {
    "deepseek-r1": ("<think>", "</think>", True),
    "deepseek-v3": ("<think>", "</think>", False),
    "qwen3": ("<think>", "</think>", False),
    "qwen3-thinking": ("<think>", "</think>", True),
    "glm45": ("<think>", "</think>", False),
    "kimi": ("◁think▷", "◁/think▷", False),
    "kimi_k2": ("<think>", "</think>", False),
    # harmony: the analysis channel is the reasoning, the final channel the answer
    "gpt-oss": ("<|channel|>analysis<|message|>", "<|end|>", False),
}
REASONING_PARSERS = tuple(_FORMATS)


def reasoning_format(name: str, enabled: bool = True) -> ReasoningFormat | None:
    """The format named `name`; None when reasoning is off for this request (qwen3 with
    chat_template_kwargs.enable_thinking false). KeyError for an unknown name."""
    if name not in _FORMATS:
        raise KeyError(f"unknown reasoning parser {name!r} (one of {', '.join(REASONING_PARSERS)})")
    if not enabled:
        return None
    start, end, forced = _FORMATS[name]
    return ReasoningFormat(start, end, forced)
