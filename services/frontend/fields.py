"""What the frontend does with every field of an OpenAI chat or completions request.

Each field the OpenAI API defines (openai.types.chat.completion_create_params and
openai.types.completion_create_params) is implemented by a field of the request Struct,
owned by the agents layer, or refused with a 400 naming it when it asks for something
shoal does not do. A field no one defines is a 400 too unless `--ignore-unknown-fields`.
docs/API_FIELDS.md is the table users read; tests/unit/test_request_fields.py keeps it honest.
"""

from __future__ import annotations

from collections.abc import Callable

import msgspec

from services.frontend.openai_types import ChatCompletionRequest, CompletionRequest
from shared.errors import BadRequest

Allowed = Callable[[object], bool]


def null(v: object) -> bool:
    return v is None


# field -> (values that ask for nothing shoal lacks, why other values are refused)
REFUSED: dict[str, tuple[Allowed, str]] = {
    "audio": (null, "audio output is not supported"),
    "modalities": (lambda v: v is None or v == ["text"], "only the text modality is supported"),
    "prediction": (null, "predicted outputs are not supported"),
    "web_search_options": (null, "web search is not supported"),
    "store": (lambda v: v in (None, False), "shoal is stateless: store must be false"),
    "metadata": (lambda v: not v, "metadata is only kept for stored completions; shoal stores nothing"),
    "service_tier": (lambda v: v in (None, "auto", "default"), "only the default service tier exists"),
    "moderation": (null, "moderation is not supported"),
    "prompt_cache_options": (null, "prompt cache options are not supported (prefix caching is automatic)"),
    "prompt_cache_retention": (null, "prompt cache retention is not configurable"),
    "best_of": (lambda v: v in (None, 1), "best_of is not supported; ask for n choices instead"),
    "functions": (null, "functions is deprecated: send tools"),
    "function_call": (null, "function_call is deprecated: send tool_choice"),
    "reasoning_effort": (null, "reasoning_effort is not supported; reasoning models think as their chat template "
                               "says (chat_template_kwargs, e.g. enable_thinking)"),
    "verbosity": (null, "verbosity is not supported"),
}

# Accepted hints with nothing to do: prefix caching is automatic; the id is logged with `user`.
HINTS = frozenset({"prompt_cache_key", "safety_identifier"})

_RawBody = dict[str, msgspec.Raw]
_raw_decoder = msgspec.json.Decoder(_RawBody)


def _defined(kind: type[msgspec.Struct]) -> frozenset[str]:
    return frozenset(f.encode_name for f in msgspec.structs.fields(kind))


KNOWN: dict[type, frozenset[str]] = {
    ChatCompletionRequest: _defined(ChatCompletionRequest) | HINTS | REFUSED.keys(),
    CompletionRequest: _defined(CompletionRequest) | HINTS | REFUSED.keys(),
}


def check_fields(raw: bytes, kind: type, ignore_unknown: bool) -> bytes:
    """The body to decode as `kind` (a chat or completions request); see `screen`."""
    return screen(raw, KNOWN[kind], REFUSED, ignore_unknown)


def screen(raw: bytes, known: frozenset[str], refused: dict[str, tuple[Allowed, str]], ignore_unknown: bool) -> bytes:
    """The body to decode: unknown fields dropped when `ignore_unknown`, else BadRequest; BadRequest for a
    refused field that asks for something. Bodies that are no JSON object pass through (the Struct
    decoder says what is wrong with them)."""
    try:
        fields = _raw_decoder.decode(raw)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return raw
    unknown = [name for name in fields if name not in known]
    if unknown and not ignore_unknown:
        raise BadRequest(f"unknown field {unknown[0]!r} (the server runs without --ignore-unknown-fields)",
                         unknown[0])
    for name, (allowed, why) in refused.items():
        if name in fields and not allowed(msgspec.json.decode(fields[name])):
            raise BadRequest(f"{name}: {why}", name)
    if not unknown:
        return raw
    return msgspec.json.encode({k: v for k, v in fields.items() if k not in unknown})
