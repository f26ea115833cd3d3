"""Budgets and checks on what a client sends, before any work is spent on it (issue 22).

    gate = RequestGate(limits, api_key)
    step = gate.http(req)                       # Host allow-list, JSON content type, the key on /metrics...
    step = await gate.body(req.body)            # JSON nesting depth and integer size: a clean 400, never a 500
    body = gate.request(body, vocab, context)   # token ids in the vocabulary, prompt bytes, grammar bytes,
                                                # logged fields' length, priority from trusted clients only
    step = gate.instance(header_value)          # router mode direct: the worker's instance id, checked

Every check fails the one request alone with a 4xx: an ErrorStep (services.frontend.steps) the caller
renders in its API's error shape (OpenAI's or Anthropic's), or a BadRequest from `request`, raised inside
the pipeline's prepare (services.frontend.pipeline) so every front door gets it. docs/SECURITY.md lists
each limit and its default.
"""

from __future__ import annotations

import asyncio
import hmac
import re
from dataclasses import dataclass
from typing import TypeVar

import msgspec
import numpy as np

from protocol.messages import ErrorCode
from services.frontend.openai_types import ChatCompletionRequest, CompletionRequest
from services.frontend.steps import ErrorStep
from shared.errors import BadRequest
from shared.http import Request

T = TypeVar("T", ChatCompletionRequest, CompletionRequest)

PROMPT_BYTES_PER_TOKEN = 32  # the default prompt-bytes budget: this many bytes per prompt token allowed
MAX_LOGGED_CHARS = 256  # `user` (logged and traced with every request)
INSTANCE_ID = re.compile(r"^[0-9a-f]{16}$")  # shared.runtime.runtime.new_instance_id
API_KEY_HEADER = "x-api-key"  # Anthropic's; the same key as Bearer
PROTECTED_PATHS = frozenset({"/metrics", "/health", "/openapi.json"})  # behind the key with --protect-metrics
_THREAD_SCAN_BYTES = 256 * 1024  # bodies larger than this are scanned off the event loop
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.S)
_LONG_INT = re.compile(rb"(?<![\w.+-])-?\d{19,}(?![\d.eE])")  # 19+ digits: maybe outside 64 bits
# digits -> "0", all else -> " ": a run of 19 zeros after translate() is a run of 19 digits; ~20x cheaper than
# _LONG_INT.search on every body (the regex then runs only on the rare body that has such a run)
_DIGITS_ONLY = bytes(0x30 if 0x30 <= i <= 0x39 else 0x20 for i in range(256))
_DIGIT_RUN = b"0" * 19
_json = msgspec.json.Encoder()


@dataclass(frozen=True)
class RequestLimits:
    max_prompt_bytes: int | None = None  # None: PROMPT_BYTES_PER_TOKEN x (max prompt tokens or context length)
    max_grammar_bytes: int = 64 * 1024  # response_format / regex / ebnf / choice / forced tools, as JSON
    max_json_depth: int = 64  # nesting of the request body's JSON
    allow_client_priority: bool = False  # else a request's `priority` is ignored (the engine's default applies)
    allowed_hosts: tuple[str, ...] = ()  # Host header values accepted (no port); empty: any
    protect_metrics: bool = False  # the API key on /metrics, /health and /openapi.json too


class RequestGate:
    def __init__(self, limits: RequestLimits, api_key: str | None) -> None:
        self.limits = limits
        self.api_key = api_key
        self._hosts = frozenset(h.lower() for h in limits.allowed_hosts)

    # ---- the HTTP request, before its body is looked at ------------------------------------
    def http(self, req: Request) -> ErrorStep | None:
        """The Host allow-list (DNS rebinding), a JSON content type on POST (CSRF: browsers send text/plain
        and forms cross-origin without a preflight), and the key on the operational routes when asked."""
        if self._hosts and _host_name(req.headers.get("host", "")) not in self._hosts:
            return ErrorStep(400, "invalid_host", "the Host header names no host this server answers for")
        if req.method == "POST" and req.path.startswith("/v1/"):
            ctype = req.headers.get("content-type", "").partition(";")[0].strip().lower()
            if ctype != "application/json":
                return ErrorStep(415, "unsupported_media_type",
                                 "send the request body as JSON (Content-Type: application/json)")
        if self.limits.protect_metrics and req.path in PROTECTED_PATHS and not self.authorized(req):
            return ErrorStep(401, "invalid_api_key", "missing or invalid API key")
        return None

    def authorized(self, req: Request) -> bool:
        """`Authorization: Bearer KEY` (OpenAI's) or `x-api-key: KEY` (Anthropic's), compared in constant time."""
        if self.api_key is None:
            return True
        got = req.headers.get("authorization", "")
        key = got[7:] if got.startswith("Bearer ") else req.headers.get(API_KEY_HEADER)
        return key is not None and hmac.compare_digest(key.encode(), self.api_key.encode())

    # ---- the body's JSON shape ------------------------------------------------------------
    async def body(self, raw: bytes) -> ErrorStep | None:
        """A 400 for JSON nested deeper than max_json_depth or an integer outside 64 bits (both would fail
        deep inside the decoders); large bodies are scanned in a thread."""
        if len(raw) > _THREAD_SCAN_BYTES:
            why = await asyncio.to_thread(json_problem, raw, self.limits.max_json_depth)
        else:
            why = json_problem(raw, self.limits.max_json_depth)
        return None if why is None else ErrorStep(400, "invalid_request", why)

    # ---- the decoded request ---------------------------------------------------------------
    def request(self, body: T, vocab_size: int, context_length: int, max_prompt_tokens: int | None) -> T:
        """`body`, checked (BadRequest says why not), with `priority` dropped unless clients may set it."""
        if body.user is not None and len(body.user) > MAX_LOGGED_CHARS:
            raise BadRequest(f"user must be at most {MAX_LOGGED_CHARS} characters", "user")
        for t in body.stop_token_ids or ():
            if not 0 <= t < vocab_size:
                raise BadRequest(f"stop_token_ids: {t} is outside the vocabulary (0..{vocab_size - 1})",
                                 "stop_token_ids")
        budget = self.limits.max_prompt_bytes or PROMPT_BYTES_PER_TOKEN * (max_prompt_tokens or context_length)
        size = _prompt_bytes(body)
        if size > budget:
            raise BadRequest(f"the prompt is {size} bytes; this server accepts at most {budget} bytes",
                             "messages" if isinstance(body, ChatCompletionRequest) else "prompt",
                             ErrorCode.CONTEXT_LENGTH)
        if isinstance(body, ChatCompletionRequest):
            self._grammar_size(body)
        if body.priority is not None and not self.limits.allow_client_priority:
            body = msgspec.structs.replace(body, priority=None)
        return body

    def _grammar_size(self, body: ChatCompletionRequest) -> None:
        forced = body.tool_choice == "required" or isinstance(body.tool_choice, dict)
        parts = [body.response_format, body.regex, body.ebnf, body.choice, body.tools if forced else None]
        size = sum(len(_json.encode(p)) for p in parts if p is not None)
        if size > self.limits.max_grammar_bytes:
            raise BadRequest(f"the structured-output grammar is {size} bytes; this server compiles at most "
                             f"{self.limits.max_grammar_bytes}", "response_format")

    # ---- router mode direct ----------------------------------------------------------------
    @staticmethod
    def instance(value: str, header: str) -> ErrorStep | None:
        """The worker a client names: an instance id (16 hex digits) before it goes near a NATS subject."""
        if INSTANCE_ID.match(value) is None:
            return ErrorStep(400, "invalid_instance_id",
                             f"header {header} must be a worker instance id (16 lowercase hex digits)")
        return None


def json_problem(raw: bytes, max_depth: int) -> str | None:
    """Why `raw` is JSON no decoder here should try (None: fine). Strings are blanked first, so brackets
    and digits inside them never count; the depth is a running sum over what is left."""
    if raw.count(b"[") + raw.count(b"{") <= max_depth and _DIGIT_RUN not in raw.translate(_DIGITS_ONLY):
        return None  # the common case: cannot be too deep, no long integer anywhere
    bare = _STRING.sub(b'""', raw)
    if bare.count(b"[") + bare.count(b"{") > max_depth:
        a = np.frombuffer(bare, dtype=np.uint8)
        step = ((a == 0x5B) | (a == 0x7B)).astype(np.int32) - ((a == 0x5D) | (a == 0x7D)).astype(np.int32)
        if len(step) and int(np.cumsum(step).max()) > max_depth:
            return f"the JSON body is nested deeper than {max_depth} levels"
    for m in _LONG_INT.finditer(bare):
        if not -(2**63) <= int(m.group()) < 2**64:
            return "an integer in the JSON body does not fit in 64 bits"
    return None


def _prompt_bytes(body: ChatCompletionRequest | CompletionRequest) -> int:
    """UTF-8 bytes of the prompt's text (message texts and tool calls; images count as their tokens later,
    not as the bytes of their URLs), or of a completions prompt; cheap next to tokenizing it."""
    if isinstance(body, CompletionRequest):
        prompt = body.prompt
        texts = [prompt] if isinstance(prompt, str) else [p for p in prompt if isinstance(p, str)]
        return sum(len(t.encode()) for t in texts) + 8 * (len(prompt) - len(texts) if isinstance(prompt, list) else 0)
    total = 0
    for m in body.messages:
        if isinstance(m.content, str):
            total += len(m.content.encode())
        elif m.content:
            total += sum(len(p.text.encode()) for p in m.content if p.text)
        if m.tool_calls:
            total += len(_json.encode(m.tool_calls))
    return total


def _host_name(host: str) -> str:
    host = host.strip().lower()
    if host.startswith("["):  # [v6]:port
        return host[: host.find("]") + 1]
    return host.rpartition(":")[0] if host.count(":") == 1 else host
