"""Chat templates: Hugging Face's Jinja dialect, rendered in a sandbox and compiled once."""

from __future__ import annotations

import json
from datetime import datetime
from functools import lru_cache
from typing import Any

import jinja2
import jinja2.ext
import jinja2.nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment


class TemplateError(ValueError):
    """The chat template refused the conversation (its `raise_exception`) or could not render it."""


class _GenerationTag(jinja2.ext.Extension):
    """`{% generation %}...{% endgeneration %}` marks assistant text for training masks; here a no-op."""

    tags = {"generation"}

    def parse(self, parser: jinja2.parser.Parser) -> list[jinja2.nodes.Node]:
        next(parser.stream)
        return parser.parse_statements(("name:endgeneration",), drop_needle=True)


def _raise(message: str) -> None:
    raise TemplateError(message)


def _tojson(value: Any, ensure_ascii: bool = False, indent: int | None = None,
            separators: tuple[str, str] | None = None, sort_keys: bool = False) -> str:
    """Unlike Jinja's own `tojson`, no HTML escaping: templates emit JSON for the model, not a browser."""
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


@lru_cache(maxsize=32)
def compile_template(source: str) -> jinja2.Template:
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[jinja2.ext.loopcontrols, _GenerationTag])
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise
    env.globals["strftime_now"] = _strftime_now
    try:
        return env.from_string(source)
    except jinja2.TemplateSyntaxError as e:
        raise TemplateError(f"chat template does not compile: {e}") from e


def render_chat(source: str, messages: list[dict[str, Any]], *, add_generation_prompt: bool,
                tools: list[dict[str, Any]] | None, specials: dict[str, str], **kwargs: Any) -> str:
    """The prompt text for `messages`; `specials` (bos_token, eos_token, ...) are visible to the template."""
    context = {**specials, **kwargs, "messages": [tool_arguments_as_objects(flatten_content(m)) for m in messages],
               "add_generation_prompt": add_generation_prompt, "tools": tools}
    try:
        return compile_template(source).render(context)
    except TemplateError:
        raise
    except jinja2.TemplateError as e:
        raise TemplateError(f"chat template failed: {e}") from e


class Arguments(dict):  # type: ignore[type-arg]
    """A call's arguments as a mapping that is also its JSON text where a template joins it to a string
    (DeepSeek's templates write `'...<sep>' + tool['function']['arguments'] + '...'`)."""

    def __str__(self) -> str:
        return json.dumps(self, ensure_ascii=False)

    def __radd__(self, other: str) -> str:
        return other + str(self)

    def __add__(self, other: str) -> str:  # type: ignore[override]
        return str(self) + other


def tool_arguments_as_objects(message: dict[str, Any]) -> dict[str, Any]:
    """An assistant turn's tool calls with `function.arguments` as an object: OpenAI sends a JSON string,
    chat templates (Hugging Face's convention) expect a mapping (text that is not JSON stays as it is)."""
    calls = message.get("tool_calls")
    if not calls:
        return message
    out = []
    for call in calls:
        fn = call.get("function") if isinstance(call, dict) else None
        if isinstance(fn, dict) and isinstance(fn.get("arguments"), str):
            try:
                args = json.loads(fn["arguments"])
                fn = {**fn, "arguments": Arguments(args) if isinstance(args, dict) else args}
            except json.JSONDecodeError:
                pass
            call = {**call, "function": fn}
        out.append(call)
    return {**message, "tool_calls": out}


def flatten_content(message: dict[str, Any]) -> dict[str, Any]:
    """OpenAI content parts -> one string (text parts joined), as most chat templates expect."""
    content = message.get("content")
    if isinstance(content, list):
        text = "".join(p.get("text") or "" for p in content if isinstance(p, dict) and p.get("type") == "text")
        return {**message, "content": text}
    if content is None:
        return {**message, "content": ""}
    return message
