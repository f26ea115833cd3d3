"""Responses a handler returns, and the bytes of their head, built from cached pieces."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from http import HTTPStatus

from shared.http.request import Request

SSE = "text/event-stream"
_SSE_EXTRA = b"cache-control: no-cache\r\nx-accel-buffering: no\r\n"
_status_lines: dict[int, bytes] = {}
_content_types: dict[str, bytes] = {}


class Response:
    """A whole response, sent with Content-Length."""

    __slots__ = ("body", "content_type", "headers", "status")

    def __init__(self, status: int, body: bytes = b"", content_type: str = "application/json",
                 headers: list[tuple[str, str]] | None = None) -> None:
        self.status = status
        self.body = body
        self.content_type = content_type
        self.headers = headers


class StreamingResponse:
    """A response whose body is written one chunk per item (Transfer-Encoding: chunked)."""

    __slots__ = ("chunks", "content_type", "headers", "status")

    def __init__(self, status: int, chunks: AsyncIterator[bytes], content_type: str = SSE,
                 headers: list[tuple[str, str]] | None = None) -> None:
        self.status = status
        self.chunks = chunks
        self.content_type = content_type
        self.headers = headers


Handler = Callable[[Request], Awaitable[Response | StreamingResponse]]


def status_line(status: int) -> bytes:
    line = _status_lines.get(status)
    if line is None:
        try:
            reason = HTTPStatus(status).phrase
        except ValueError:
            reason = "Unknown"
        line = _status_lines[status] = f"HTTP/1.1 {status} {reason}\r\n".encode("latin-1")
    return line


def _content_type(value: str) -> bytes:
    line = _content_types.get(value)
    if line is None:
        line = f"content-type: {value}\r\n".encode("latin-1")
        if value.startswith(SSE):
            line += _SSE_EXTRA
        if len(_content_types) < 256:
            _content_types[value] = line
    return line


def _extra(headers: list[tuple[str, str]]) -> bytes:
    out = []
    for name, value in headers:
        if "\r" in value or "\n" in value or "\r" in name or "\n" in name:
            raise ValueError(f"header {name!r} contains a line break")
        out.append(f"{name}: {value}\r\n")
    return "".join(out).encode("latin-1")


def encode_head(status: int, content_type: str, headers: list[tuple[str, str]] | None, framing: bytes,
                date: bytes) -> bytes:
    """The status line and headers; `framing` carries content-length or transfer-encoding and connection."""
    extra = _extra(headers) if headers else b""
    return b"%b%b%b%b%b\r\n" % (status_line(status), date, _content_type(content_type), extra, framing)


def error_response(status: int, message: str) -> Response:
    """An error in OpenAI's shape."""
    kind = "invalid_request_error" if status < 500 else "server_error"
    body = json.dumps({"error": {"message": message, "type": kind, "code": status}}).encode()
    return Response(status, body)
