"""`auto` parsers: the family's format read off the chat template and the tokenizer's special tokens (the
markers each family's template renders)."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

AUTO = "auto"
log = logging.getLogger("shoal.parsers")


@dataclass(frozen=True)
class Detected:
    family: str  # "" when unknown
    tool_parser: str | None
    reasoning_parser: str | None
    warning: str = ""  # set when the template renders tools in a format no parser knows


# (family, signs any of which marks it, tool parser, reasoning parser (None: none, "think": if <think> appears))
_FAMILIES: list[tuple[str, tuple[str, ...], str | None, str | None]] = [
    ("gpt-oss", ("<|channel|>", "<|constrain|>"), "gpt-oss", "gpt-oss"),
    ("deepseek-v3.2", ("\uff5cDSML\uff5c",), "deepseekv32", "think"),
    ("deepseek-v3", ("tool\u2581calls\u2581begin", "tool\u2581call\u2581begin"), "deepseekv3", "think"),
    ("kimi-k2", ("<|tool_calls_section_begin|>", "<|tool_call_section_begin|>", "<|tool_call_begin|>"),
     "kimi_k2", "think"),
    ("minimax-m2", ("<minimax:tool_call>",), "minimax", "think"),
    ("glm", ("<arg_key>", "<arg_value>"), "glm45", "think"),
    ("qwen3-coder", ("<function=", "<parameter="), "qwen3_coder", "think"),
    ("mistral", ("[TOOL_CALLS]", "[AVAILABLE_TOOLS]"), "mistral", "mistral"),
    ("llama4", ("<|python_start|>", "[func_name1(", "<|header_start|>"), "llama4", None),
    ("llama3", ("<|python_tag|>", "<|eom_id|>", '"parameters": dictionary of argument name'), "llama3", None),
    ("functiongemma", ("<start_function_call>",), "functiongemma", None),
    ("qwen", ("<tool_call>",), "qwen25", "think"),
]


def detect(template: str | None, specials: Iterable[str] = ()) -> Detected:
    """The family whose markers the template (or, failing that, the special tokens) shows."""
    text = template or ""
    tokens = "\n".join(specials)
    think = "<think>" in text or "<think>" in tokens
    for where in (text, tokens):
        for family, signs, tool, reasoning in _FAMILIES:
            if any(s in where for s in signs):
                if reasoning == "think":
                    reasoning = "think" if think else None
                if reasoning == "mistral" and "[THINK]" not in text + tokens:
                    reasoning = None
                if family == "kimi-k2" and "◁think▷" in text + tokens:
                    reasoning = "kimi"
                if family == "deepseek-v3" and "```json" not in text:
                    tool = "deepseekv31"  # V3.1 and later write the arguments bare, V3 in a json fence
                return Detected(family, tool, reasoning)
    warning = ""
    if "tools" in text:
        warning = ("the chat template renders tools in a format shoal does not recognise: tool calls will not be "
                   "parsed (set --tool-call-parser NAME)")
    return Detected("", None, "think" if think else None, warning)


def detect_for(tokenizer: Any) -> Detected:
    """`detect` on a shared.tokenizer.Tokenizer (cached on it)."""
    cached = getattr(tokenizer, "_shoal_detected", None)
    if cached is not None:
        return cached
    try:
        specials = [t.content for t in tokenizer.backend.get_added_tokens_decoder().values()]
    except AttributeError:
        specials = []
    got = detect(getattr(tokenizer, "chat_template", None), specials)
    try:
        tokenizer._shoal_detected = got
    except AttributeError:
        pass
    return got


def resolve_parsers(tool_parser: str | None, reasoning_parser: str | None,
                    tokenizer: Any) -> tuple[str | None, str | None]:
    """Explicit names stay; `auto` becomes the detected family's parser (None when unknown)."""
    if AUTO not in (tool_parser, reasoning_parser):
        return tool_parser, reasoning_parser
    got = detect_for(tokenizer)
    return (got.tool_parser if tool_parser == AUTO else tool_parser,
            got.reasoning_parser if reasoning_parser == AUTO else reasoning_parser)


def model_parsers(tool_parser: str | None, reasoning_parser: str | None,
                  tokenizer: Any) -> tuple[str | None, str | None, Detected | None]:
    """What a worker publishes in its model card: explicit names as given; unset or `auto` (when the model has
    a chat template) the detected ones. The detection is returned for the log (None when not used)."""
    has_template = bool(getattr(tokenizer, "chat_template", None))
    tool = AUTO if tool_parser is None and has_template else tool_parser
    reasoning = AUTO if reasoning_parser is None and has_template else reasoning_parser
    if AUTO not in (tool, reasoning):
        return tool, reasoning, None
    got = detect_for(tokenizer)
    tool, reasoning = resolve_parsers(tool, reasoning, tokenizer)
    return tool, reasoning, got
