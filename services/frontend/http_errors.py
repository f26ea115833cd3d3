"""OpenAI-style error responses and SSE framing, shared by every OpenAI route (Anthropic's are in render_messages)."""

from __future__ import annotations

from typing import TypeVar

import msgspec

from protocol.messages import HTTP_STATUS
from services.frontend.openai_types import ErrorBody, ErrorResponse
from services.frontend.steps import ErrorStep
from shared.errors import client_message
from shared.http import Response
from shared.runtime.errors import RuntimeFailure
from shared.telemetry.logging import get_logger

log = get_logger("shoal.frontend")
json_encoder = msgspec.json.Encoder()
T = TypeVar("T")
WORKER_HEADER = "x-shoal-worker"  # which instance served the request
SSE_DONE = b"data: [DONE]\n\n"


def sse_event(obj: msgspec.Struct) -> bytes:
    return b"data: " + json_encoder.encode(obj) + b"\n\n"


def sse_error(e: RuntimeFailure) -> bytes:
    """A stream's last event when it fails after the 200 went out (OpenAI's error shape), then [DONE]."""
    status = HTTP_STATUS.get(e.code, 500)
    kind = "server_error" if status >= 500 else "invalid_request_error"
    return sse_event(ErrorResponse(ErrorBody(_public(e), kind, None, e.code.value))) + SSE_DONE


def sse_error_step(step: ErrorStep) -> bytes:
    kind = "server_error" if step.status >= 500 else "invalid_request_error"
    return sse_event(ErrorResponse(ErrorBody(step.message, kind, step.param, step.code))) + SSE_DONE


def openai_error(step: ErrorStep) -> Response:
    return error_response(step.status, step.message, step.code, step.param, step.retry_after)


def error_response(status: int, message: str, code: str | None = None, param: str | None = None,
                   retry_after: float | None = None) -> Response:
    kind = ("authentication_error" if status == 401 else "rate_limit_error" if status == 429
            else "invalid_request_error" if status < 500 else "server_error")
    body = json_encoder.encode(ErrorResponse(ErrorBody(message, kind, param, code)))
    headers = [("Retry-After", str(max(1, round(retry_after))))] if retry_after is not None else None
    return Response(status, body, headers=headers)


def failure_response(e: RuntimeFailure) -> Response:
    status = HTTP_STATUS.get(e.code, 500)
    retry = e.retry_after if e.retry_after is not None else (1.0 if status in (429, 503) else None)
    return error_response(status, _public(e), e.code.value, getattr(e, "param", None), retry)


def _public(e: RuntimeFailure) -> str:
    text = client_message(e.code, e.message)
    if text != e.message:
        log.warning("request_failed", code=e.code.value, detail=e.message[:2000])
    return text


def decode_body(raw: bytes, kind: type[T]) -> T | Response:
    """The request body as `kind`, or the 400 that says why it is not one."""
    try:
        return msgspec.json.decode(raw, type=kind)
    except msgspec.ValidationError as e:
        return error_response(400, f"invalid request: {e}", "invalid_request")
    except msgspec.DecodeError as e:
        return error_response(400, f"invalid JSON body: {e}", "invalid_json")
