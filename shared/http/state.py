"""What a server shares with its connections: limits, the handler, counters, the cached Date header."""

from __future__ import annotations

import asyncio
import time
from email.utils import formatdate
from typing import Protocol

from shared.http.response import Handler


class Connection(Protocol):
    """What the server asks of a connection it drains (shared.http.connection.HttpConnection)."""

    def shutdown(self) -> None: ...

    def abort(self) -> None: ...


class ServerState:
    __slots__ = ("_date_timer", "body_timeout", "connections", "date", "draining", "handler", "header_timeout", "idle",
                 "in_flight", "keepalive_timeout", "loop", "max_body_bytes", "max_connections", "max_header_bytes",
                 "max_headers", "max_pipelined_bytes")

    def __init__(self, handler: Handler, loop: asyncio.AbstractEventLoop, max_body_bytes: int,
                 max_header_bytes: int, keepalive_timeout: float, header_timeout: float = 10.0,
                 max_connections: int | None = None, *, body_timeout: float = 60.0, max_headers: int = 100,
                 max_pipelined_bytes: int = 2**20) -> None:
        self.handler = handler
        self.loop = loop
        self.max_body_bytes = max_body_bytes
        self.max_header_bytes = max_header_bytes
        self.keepalive_timeout = keepalive_timeout
        self.header_timeout = header_timeout  # a request head must be complete this long after it began
        self.max_connections = max_connections
        self.body_timeout = body_timeout  # a body must be complete this long after its head
        self.max_headers = max_headers  # header lines per request head (431 past it)
        self.max_pipelined_bytes = max_pipelined_bytes  # queued requests' bytes before reading pauses
        self.connections: set[Connection] = set()
        self.in_flight = 0
        self.draining = False
        self.idle = asyncio.Event()
        self.idle.set()
        self.date = b""
        self._date_timer: asyncio.TimerHandle | None = None
        self._refresh_date()

    def request_started(self) -> None:
        self.in_flight += 1
        self.idle.clear()

    def request_finished(self) -> None:
        self.in_flight -= 1
        if self.in_flight == 0:
            self.idle.set()

    def _refresh_date(self) -> None:
        now = time.time()
        self.date = b"date: %b\r\n" % formatdate(now, usegmt=True).encode()
        self._date_timer = self.loop.call_at(self.loop.time() + 1.0 - now % 1.0, self._refresh_date)

    def close(self) -> None:
        if self._date_timer is not None:
            self._date_timer.cancel()
            self._date_timer = None
