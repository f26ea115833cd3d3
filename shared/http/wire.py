"""Bytes and small helpers of the HTTP/1.1 wire, for shared.http.connection."""

from __future__ import annotations

from collections.abc import AsyncIterator

from shared.http.request import Request

_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_KEEP_10 = b"connection: keep-alive\r\n"
_CLOSE = b"connection: close\r\n"
_CHUNKED = b"transfer-encoding: chunked\r\n"
_LAST_CHUNK = b"0\r\n\r\n"
_METHODS = {m.encode(): m for m in ("GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH")}


class _Reject(Exception):
    """Raised inside a parser callback to stop parsing with an error status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _size(req: Request) -> int:
    """What a queued request holds in memory, near enough: its body and its head."""
    h = req.headers
    return len(req.body) + len(req.path) + len(req.query) + sum(map(len, h)) + sum(map(len, h.values())) + 4 * len(h)


async def _aclose(chunks: AsyncIterator[bytes]) -> None:
    aclose = getattr(chunks, "aclose", None)
    if aclose is not None:
        await aclose()
