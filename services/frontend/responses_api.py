"""/v1/responses requests, and the shapes of its output items.

A responses request becomes the pipeline's chat request (instructions and input items
become messages, function tools and `text.format` their chat forms); the step stream
becomes output items (services.frontend.render_responses). Whatever the pipeline learns
(tool calls, reasoning, structured output) shows up here without code of its own.
Stateless: `previous_response_id`, `store: true`, `background` and `conversation` are a 400.
"""

from __future__ import annotations

import secrets
from typing import Annotated, Any

import msgspec
from msgspec import Meta

from protocol.messages import Usage
from services.frontend.fields import Allowed, null, screen
from services.frontend.openai_types import Temperature, TopP
from shared.errors import BadRequest

PositiveInt = Annotated[int, Meta(ge=1)]


class ResponsesRequest(msgspec.Struct, frozen=True, kw_only=True):
    model: str
    input: str | list[dict[str, Any]]
    instructions: str | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    text: dict[str, Any] | None = None
    reasoning: dict[str, Any] | None = None
    max_output_tokens: PositiveInt | None = None
    temperature: Temperature | None = None
    top_p: TopP | None = None
    stream: bool = False
    user: str | None = None
    metadata: dict[str, str] | None = None
    # accepted only when they ask for nothing a stateless server lacks (REFUSED)
    store: bool | None = None
    previous_response_id: str | None = None
    background: bool | None = None
    conversation: Any = None
    prompt: Any = None
    include: list[str] | None = None
    truncation: str | None = None
    max_tool_calls: int | None = None
    top_logprobs: int | None = None
    service_tier: str | None = None
    stream_options: dict[str, Any] | None = None
    safety_identifier: str | None = None
    prompt_cache_key: str | None = None


def _not_true(v: object) -> bool:
    return v in (None, False)


# field -> (values that ask for nothing a stateless server lacks, why others are refused)
REFUSED: dict[str, tuple[Allowed, str]] = {
    "previous_response_id": (null, "shoal stores no responses: send the whole conversation as input items"),
    "store": (_not_true, "shoal stores no responses: leave store unset or false"),
    "background": (_not_true, "background responses need a store; shoal has none"),
    "conversation": (null, "conversations need a store; shoal has none"),
    "prompt": (null, "stored prompt templates are not supported"),
    "truncation": (lambda v: v in (None, "disabled"), "automatic truncation is not supported"),
    "max_tool_calls": (null, "max_tool_calls is not supported"),
    "top_logprobs": (lambda v: not v, "logprobs are not supported on /v1/responses; use /v1/chat/completions"),
    "include": (lambda v: not v, "include is not supported"),
}
KNOWN = frozenset(f.encode_name for f in msgspec.structs.fields(ResponsesRequest))


def parse_request(body: bytes, ignore_unknown: bool) -> ResponsesRequest:
    """The request, or BadRequest naming the field that is unknown, malformed or refused."""
    body = screen(body, KNOWN, REFUSED, ignore_unknown)
    try:
        return msgspec.json.decode(body, type=ResponsesRequest)
    except (msgspec.DecodeError, msgspec.ValidationError) as e:
        raise BadRequest(f"invalid request: {e}") from e


# ---- request -> chat request --------------------------------------------------------------

def to_chat(req: ResponsesRequest) -> dict[str, Any]:
    """The chat completions body that answers `req`."""
    messages: list[dict[str, Any]] = []
    if req.instructions:
        messages.append({"role": "system", "content": req.instructions})
    items = [{"role": "user", "content": req.input}] if isinstance(req.input, str) else req.input
    for item in items:
        _add_item(messages, item)
    body: dict[str, Any] = {"model": req.model, "messages": messages, "stream": req.stream}
    if req.stream:
        body["stream_options"] = {"include_usage": True}
    optional = {"max_completion_tokens": req.max_output_tokens, "temperature": req.temperature,
                "top_p": req.top_p, "user": req.user, "parallel_tool_calls": req.parallel_tool_calls,
                "tools": _tools(req.tools), "tool_choice": _tool_choice(req.tool_choice),
                "response_format": _response_format(req.text),
                "reasoning_effort": (req.reasoning or {}).get("effort")}
    body.update({k: v for k, v in optional.items() if v is not None})
    return body


def _add_item(messages: list[dict[str, Any]], item: dict[str, Any]) -> None:
    kind = item.get("type", "message")
    if kind == "message":
        content = item.get("content")
        parts = content if isinstance(content, str) else [_part(p) for p in content or []]
        messages.append({"role": item.get("role", "user"), "content": parts})
    elif kind == "function_call":
        call = {"id": item.get("call_id"), "type": "function",
                "function": {"name": item.get("name"), "arguments": item.get("arguments", "")}}
        last = messages[-1] if messages else None
        if last and last["role"] == "assistant" and last.get("tool_calls") is not None:
            last["tool_calls"].append(call)
        else:
            messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
    elif kind == "function_call_output":
        messages.append({"role": "tool", "tool_call_id": item.get("call_id"), "content": item.get("output", "")})
    elif kind != "reasoning":  # earlier reasoning is not sent back to the model, as chat templates drop it
        raise BadRequest(f"input items of type {kind!r} are not supported", "input")


def _part(part: dict[str, Any]) -> dict[str, Any]:
    kind = part.get("type")
    if kind in ("input_text", "output_text", "text"):
        return {"type": "text", "text": part.get("text", "")}
    if kind == "input_image" and part.get("image_url"):
        return {"type": "image_url", "image_url": {"url": part["image_url"]}}
    raise BadRequest(f"content parts of type {kind!r} are not supported", "input")


def _tools(tools: list[dict[str, Any]] | None) -> list[dict[str, Any]] | None:
    if not tools:
        return None
    out = []
    for t in tools:
        if t.get("type") != "function":
            raise BadRequest(f"tools of type {t.get('type')!r} are not supported (only function)", "tools")
        fn = {k: t[k] for k in ("name", "description", "parameters", "strict") if t.get(k) is not None}
        out.append({"type": "function", "function": fn})
    return out


def _tool_choice(choice: str | dict[str, Any] | None) -> str | dict[str, Any] | None:
    if isinstance(choice, dict) and choice.get("type") == "function":
        return {"type": "function", "function": {"name": choice.get("name")}}
    return choice


def _response_format(text: dict[str, Any] | None) -> dict[str, Any] | None:
    fmt = (text or {}).get("format")
    if not fmt or fmt.get("type") == "text":
        return None
    if fmt.get("type") == "json_schema":
        spec = {k: fmt[k] for k in ("name", "schema", "strict", "description") if k in fmt}
        return {"type": "json_schema", "json_schema": spec}
    return {"type": fmt.get("type")}


# ---- chat result -> response ----------------------------------------------------------------

def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(12)}"


def reasoning_item(item_id: str, text: str) -> dict[str, Any]:
    return {"type": "reasoning", "id": item_id, "summary": [], "content": [{"type": "reasoning_text", "text": text}],
            "status": "completed"}


def text_part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def message_item(item_id: str, text: str | None) -> dict[str, Any]:
    """A finished message (None: one just opened in a stream, still empty)."""
    return {"type": "message", "id": item_id, "role": "assistant", "status": "in_progress" if text is None
            else "completed", "content": [] if text is None else [text_part(text)]}


def call_item(item_id: str, call_id: str, name: str, arguments: str, status: str = "completed") -> dict[str, Any]:
    return {"type": "function_call", "id": item_id, "call_id": call_id, "name": name, "arguments": arguments,
            "status": status}


def response_object(req: ResponsesRequest, rid: str, created: int, output: list[dict[str, Any]],
                    finish_reason: str | None, usage: Usage | None, status: str = "completed") -> dict[str, Any]:
    if status == "completed" and finish_reason == "length":
        status = "incomplete"
    u = usage or Usage()
    return {
        "id": rid, "object": "response", "created_at": created, "status": status, "model": req.model,
        "output": output, "error": None,
        "incomplete_details": {"reason": "max_output_tokens"} if status == "incomplete" else None,
        "instructions": req.instructions, "max_output_tokens": req.max_output_tokens,
        "metadata": req.metadata or {}, "parallel_tool_calls": req.parallel_tool_calls is not False,
        "previous_response_id": None, "reasoning": req.reasoning, "store": False,
        "temperature": req.temperature, "top_p": req.top_p, "text": req.text or {"format": {"type": "text"}},
        "tool_choice": req.tool_choice or "auto", "tools": req.tools or [], "truncation": "disabled",
        "user": req.user,
        "usage": None if usage is None else {
            "input_tokens": u.prompt_tokens, "output_tokens": u.completion_tokens,
            "total_tokens": u.prompt_tokens + u.completion_tokens,
            "input_tokens_details": {"cached_tokens": u.cached_tokens},
            "output_tokens_details": {"reasoning_tokens": 0}},
    }
