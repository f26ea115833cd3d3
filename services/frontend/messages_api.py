"""Anthropic's Messages API (POST /v1/messages, /v1/messages/count_tokens): the request side.

A messages request becomes the pipeline's chat request: `system` a system message, text and
image blocks content parts, `tool_use` blocks an assistant's tool calls, `tool_result` blocks
tool messages; `tools` / `tool_choice` (auto, any, tool, none) their chat forms; `thinking`
the chat template's enable_thinking. Everything is checked before a worker is touched: a
missing `max_tokens`, a block of the wrong type for its role, a `tool_result` with no
matching `tool_use`, a field the API does not define -> 400 in Anthropic's error shape.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

from services.frontend.fields import Allowed, null, screen
from services.frontend.http_errors import json_encoder
from services.frontend.openai_types import ChatCompletionRequest
from services.frontend.steps import ErrorStep
from shared.errors import BadRequest
from shared.http import Response

ANTHROPIC_ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                         404: "not_found_error", 413: "request_too_large", 429: "rate_limit_error",
                         503: "overloaded_error", 529: "overloaded_error"}


class MessagesRequest(msgspec.Struct, frozen=True, kw_only=True):
    model: str
    messages: Annotated[list[dict[str, Any]], Meta(min_length=1)]
    max_tokens: Annotated[int, Meta(ge=1)] | None = None  # required, but not by count_tokens
    system: str | list[dict[str, Any]] | None = None
    stop_sequences: list[str] | None = None
    stream: bool = False
    temperature: Annotated[float, Meta(ge=0.0, le=1.0)] | None = None
    top_p: Annotated[float, Meta(ge=0.0, le=1.0)] | None = None
    top_k: Annotated[int, Meta(ge=0)] | None = None
    metadata: dict[str, Any] | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: dict[str, Any] | None = None
    thinking: dict[str, Any] | None = None
    output_config: dict[str, Any] | None = None  # format: structured output; effort: a hint
    service_tier: Literal["auto", "standard_only"] | None = None


# Accepted with nothing to do: prefix caching is automatic, there is one speed, region and workspace.
HINTS = frozenset({"cache_control", "speed", "inference_geo", "user_profile_id", "workspace_id", "diagnostics"})
REFUSED: dict[str, tuple[Allowed, str]] = {"container": (null, "containers (code execution) are not supported")}
KNOWN = frozenset(f.encode_name for f in msgspec.structs.fields(MessagesRequest)) | HINTS | REFUSED.keys()
THINKING = {"enabled": True, "adaptive": True, "between_tools": True, "disabled": False}


def anthropic_error(step: ErrorStep) -> Response:
    """Anthropic's error body: {"type": "error", "error": {"type": ..., "message": ...}}."""
    kind = ANTHROPIC_ERROR_TYPES.get(step.status, "api_error" if step.status >= 500 else "invalid_request_error")
    headers = [("Retry-After", str(max(1, round(step.retry_after))))] if step.retry_after is not None else None
    return Response(step.status, json_encoder.encode(error_body(kind, step.message)), headers=headers)


def error_body(kind: str, message: str) -> dict[str, Any]:
    return {"type": "error", "error": {"type": kind, "message": message}}


def decode_messages(raw: bytes, ignore_unknown: bool, counting: bool = False
                    ) -> tuple[ChatCompletionRequest, MessagesRequest]:
    """(the chat request the pipeline runs, the messages request), or BadRequest saying what is wrong.
    `counting`: for /v1/messages/count_tokens, which needs no max_tokens."""
    raw = screen(raw, KNOWN, REFUSED, ignore_unknown)
    try:
        req = msgspec.json.decode(raw, type=MessagesRequest)
    except msgspec.ValidationError as e:
        raise BadRequest(f"invalid request: {e}", _field_of(str(e))) from e
    except msgspec.DecodeError as e:
        raise BadRequest(f"invalid JSON body: {e}") from e
    if req.max_tokens is None and not counting:
        raise BadRequest("max_tokens: field required", "max_tokens")
    return to_chat(req), req


def _field_of(message: str) -> str | None:
    return "max_tokens" if "max_tokens" in message else None


def decode_count(raw: bytes, ignore_unknown: bool) -> tuple[ChatCompletionRequest, MessagesRequest]:
    return decode_messages(raw, ignore_unknown, counting=True)


def to_chat(req: MessagesRequest) -> ChatCompletionRequest:
    messages = _system(req.system) + _messages(req.messages)
    tools = [_tool(i, t) for i, t in enumerate(req.tools or [])]
    choice, parallel = _tool_choice(req.tool_choice, tools)
    thinking = (req.thinking or {}).get("type")
    if thinking is not None and thinking not in THINKING:
        raise BadRequest(f"thinking.type must be one of {', '.join(THINKING)}", "thinking")
    user = (req.metadata or {}).get("user_id")
    if user is not None and not isinstance(user, str):
        raise BadRequest("metadata.user_id must be a string", "metadata")
    body: dict[str, Any] = {
        "model": req.model, "messages": messages, "max_tokens": req.max_tokens, "stream": req.stream,
        "stop": req.stop_sequences or None, "temperature": req.temperature, "top_p": req.top_p,
        "top_k": req.top_k, "user": user, "tools": tools or None, "tool_choice": choice,
        "parallel_tool_calls": parallel,
        "chat_template_kwargs": None if thinking is None else {"enable_thinking": THINKING[thinking]},
        "response_format": _output_format(req.output_config),
    }
    try:
        return msgspec.convert({k: v for k, v in body.items() if v is not None}, ChatCompletionRequest)
    except msgspec.ValidationError as e:
        raise BadRequest(f"invalid request: {e}") from e


def _output_format(config: dict[str, Any] | None) -> dict[str, Any] | None:
    fmt = (config or {}).get("format")
    if fmt is None:
        return None
    if not isinstance(fmt, dict) or fmt.get("type") != "json_schema" or not isinstance(fmt.get("schema"), dict):
        raise BadRequest("output_config.format must be {type: json_schema, schema}", "output_config")
    return {"type": "json_schema", "json_schema": {"name": "output", "schema": fmt["schema"]}}


def _system(system: str | list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    if system is None:
        return []
    if isinstance(system, str):
        return [{"role": "system", "content": system}]
    texts = []
    for i, block in enumerate(system):
        if block.get("type") != "text" or not isinstance(block.get("text"), str):
            raise BadRequest(f"system[{i}] must be a text block", "system")
        texts.append(block["text"])
    return [{"role": "system", "content": "\n\n".join(texts)}]


def _messages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    calls: set[str] = set()  # tool_use ids so far
    for i, m in enumerate(messages):
        role, content = m.get("role"), m.get("content")
        where = f"messages[{i}]"
        if role not in ("user", "assistant"):
            raise BadRequest(f"{where}.role must be user or assistant, not {role!r}", "messages")
        if set(m) - {"role", "content"}:
            raise BadRequest(f"{where} has unknown field {sorted(set(m) - {'role', 'content'})[0]!r}", "messages")
        blocks = [{"type": "text", "text": content}] if isinstance(content, str) else content
        if not isinstance(blocks, list):
            raise BadRequest(f"{where}.content must be a string or a list of content blocks", "messages")
        out += _assistant(blocks, where, calls) if role == "assistant" else _user(blocks, where, calls)
    return out


def _assistant(blocks: list[Any], where: str, calls: set[str]) -> list[dict[str, Any]]:
    text, tool_calls = "", []
    for j, b in enumerate(blocks):
        kind = _kind(b, f"{where}.content[{j}]")
        if kind == "text":
            text += _text(b, f"{where}.content[{j}]")
        elif kind == "tool_use":
            if not isinstance(b.get("id"), str) or not isinstance(b.get("name"), str) \
                    or not isinstance(b.get("input"), dict):
                raise BadRequest(f"{where}.content[{j}]: tool_use needs id, name and input (an object)", "messages")
            calls.add(b["id"])
            tool_calls.append({"id": b["id"], "type": "function", "function": {
                "name": b["name"], "arguments": json.dumps(b["input"], ensure_ascii=False)}})
        elif kind not in ("thinking", "redacted_thinking"):  # earlier thinking is not sent back, as templates drop it
            raise BadRequest(f"{where}.content[{j}]: an assistant message cannot hold {kind!r} blocks", "messages")
    msg: dict[str, Any] = {"role": "assistant", "content": text or (None if tool_calls else "")}
    if tool_calls:
        msg["tool_calls"] = tool_calls
    return [msg]


def _user(blocks: list[Any], where: str, calls: set[str]) -> list[dict[str, Any]]:
    results: list[dict[str, Any]] = []
    parts: list[dict[str, Any]] = []
    for j, b in enumerate(blocks):
        at = f"{where}.content[{j}]"
        kind = _kind(b, at)
        if kind == "text":
            parts.append({"type": "text", "text": _text(b, at)})
        elif kind == "image":
            parts.append(_image(b, at))
        elif kind == "tool_result":
            use = b.get("tool_use_id")
            if use not in calls:
                raise BadRequest(f"{at}: tool_result for tool_use_id {use!r}, which no earlier tool_use block has",
                                 "messages")
            results.append({"role": "tool", "tool_call_id": use, "content": _result_text(b.get("content"), at)})
        else:
            raise BadRequest(f"{at}: a user message cannot hold {kind!r} blocks", "messages")
    if not parts:
        return results
    content: str | list[dict[str, Any]] = parts[0]["text"] if len(parts) == 1 and parts[0]["type"] == "text" \
        else parts
    return [*results, {"role": "user", "content": content}]


def _kind(block: Any, at: str) -> str:
    if not isinstance(block, dict) or not isinstance(block.get("type"), str):
        raise BadRequest(f"{at} must be a content block with a type", "messages")
    return block["type"]


def _text(block: dict[str, Any], at: str) -> str:
    if not isinstance(block.get("text"), str):
        raise BadRequest(f"{at}: a text block needs text (a string)", "messages")
    return block["text"]


def _image(block: dict[str, Any], at: str) -> dict[str, Any]:
    src = block.get("source") or {}
    if src.get("type") == "base64" and isinstance(src.get("data"), str) and isinstance(src.get("media_type"), str):
        url = f"data:{src['media_type']};base64,{src['data']}"
    elif src.get("type") == "url" and isinstance(src.get("url"), str):
        url = src["url"]
    else:
        raise BadRequest(f"{at}: an image block needs source {{type: base64, media_type, data}} or "
                         "{type: url, url}", "messages")
    return {"type": "image_url", "image_url": {"url": url}}


def _result_text(content: Any, at: str) -> str:
    if content is None or isinstance(content, str):
        return content or ""
    if not isinstance(content, list):
        raise BadRequest(f"{at}: tool_result content must be a string or a list of text blocks", "messages")
    texts = []
    for b in content:
        if _kind(b, at) != "text":
            raise BadRequest(f"{at}: tool_result content blocks must be text", "messages")
        texts.append(_text(b, at))
    return "".join(texts)


def _tool(i: int, tool: dict[str, Any]) -> dict[str, Any]:
    name, schema = tool.get("name"), tool.get("input_schema")
    if tool.get("type") not in (None, "custom") or not isinstance(name, str) or not isinstance(schema, dict):
        raise BadRequest(f"tools[{i}] must be a custom tool with name and input_schema (an object)", "tools")
    fn = {"name": name, "parameters": schema}
    if isinstance(tool.get("description"), str):
        fn["description"] = tool["description"]
    return {"type": "function", "function": fn}


def _tool_choice(choice: dict[str, Any] | None, tools: list[dict[str, Any]]
                 ) -> tuple[str | dict[str, Any] | None, bool | None]:
    """The chat tool_choice and parallel_tool_calls for Anthropic's tool_choice."""
    if choice is None:
        return None, None
    kind = choice.get("type")
    parallel = False if choice.get("disable_parallel_tool_use") else None
    if kind in ("auto", "none"):
        return kind, parallel
    if kind == "any":
        return "required", parallel
    if kind == "tool" and isinstance(choice.get("name"), str):
        if choice["name"] not in {t["function"]["name"] for t in tools}:
            raise BadRequest(f"tool_choice names tool {choice['name']!r}, which is not in tools", "tool_choice")
        return {"type": "function", "function": {"name": choice["name"]}}, parallel
    raise BadRequest("tool_choice must be {type: auto | any | none} or {type: tool, name}", "tool_choice")
