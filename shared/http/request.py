"""One parsed HTTP request, as a handler sees it."""

from __future__ import annotations

import asyncio


class Request:
    """A complete request: the body is read in full before the handler runs.

    `disconnected` is created on first use, so requests whose handler never looks
    at it cost no Event; once the client is gone it is (or comes back) already set.
    """

    __slots__ = ("_disconnected", "_lost", "body", "client", "headers", "keep_alive", "method", "path", "query",
                 "version")

    def __init__(self, method: str, path: str, query: str, headers: dict[str, str], body: bytes,
                 client: tuple[str, int] | None, version: str = "1.1", keep_alive: bool = True) -> None:
        self.method = method
        self.path = path
        self.query = query
        self.headers = headers
        self.body = body
        self.client = client
        self.version = version
        self.keep_alive = keep_alive
        self._lost = False
        self._disconnected: asyncio.Event | None = None

    @property
    def disconnected(self) -> asyncio.Event:
        """Set when the client connection is lost."""
        if self._disconnected is None:
            self._disconnected = asyncio.Event()
            if self._lost:
                self._disconnected.set()
        return self._disconnected

    def mark_lost(self) -> None:
        self._lost = True
        if self._disconnected is not None:
            self._disconnected.set()

    def __repr__(self) -> str:
        return f"Request({self.method} {self.path}{'?' + self.query if self.query else ''})"
