"""Each service's system port: /health (/live), /ready, /metrics over a tiny HTTP/1.1 server.

    server = SystemServer("127.0.0.1", 0, ready=lambda: engine_ready)
    port = await server.start()
    ...
    await server.stop()

GET and HEAD only, keep-alive, no request bodies; an orchestrator's probes
and a Prometheus scrape are all it serves.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import httptools
import msgspec

from shared.telemetry.logging import get_logger
from shared.telemetry.metrics import render_metrics

log = get_logger("shoal.system")

MAX_URL = 8192
IDLE_TIMEOUT_S = 60.0
JSON = "application/json"
TEXT = "text/plain; charset=utf-8"
REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed", 414: "URI Too Long",
           500: "Internal Server Error", 503: "Service Unavailable"}

Response = tuple[int, bytes, str]


class SystemServer:
    def __init__(self, host: str, port: int, ready: Callable[[], bool],
                 health: Callable[[], dict[str, Any]] | None = None) -> None:
        self.host = host
        self.port = port
        self._ready = ready
        self._health = health
        self._server: asyncio.Server | None = None
        self._connections: set[_Connection] = set()

    async def start(self) -> int:
        """Listen; returns the bound port (a free one when port is 0)."""
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _Connection(self), self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("system_server_started", host=self.host, port=self.port)
        return self.port

    async def stop(self) -> None:
        if self._server is None:
            return
        self._server.close()
        for conn in list(self._connections):
            conn.close()
        await self._server.wait_closed()
        self._server = None
        log.info("system_server_stopped", port=self.port)

    def respond(self, method: str, path: str) -> Response:
        if method not in ("GET", "HEAD"):
            return 405, b'{"error":"method not allowed"}', JSON
        route = path.split("?", 1)[0].rstrip("/") or "/"
        if route in ("/health", "/live"):
            return self._health_response()
        if route == "/ready":
            return self._ready_response()
        if route == "/metrics":
            body, content_type = render_metrics()
            return 200, body, content_type
        return 404, b'{"error":"not found"}', JSON

    def _health_response(self) -> Response:
        try:
            extra = self._health() if self._health is not None else {}
            return 200, msgspec.json.encode({"status": "ok", **extra}), JSON
        except Exception as e:
            log.warning("health_check_failed", error=repr(e))
            return 500, msgspec.json.encode({"status": "error", "error": type(e).__name__}), JSON

    def _ready_response(self) -> Response:
        try:
            ready = bool(self._ready())
        except Exception as e:
            log.warning("ready_check_failed", error=repr(e))
            ready = False
        body = b'{"status":"ready"}' if ready else b'{"status":"not_ready"}'
        return (200 if ready else 503), body, JSON


class _Connection(asyncio.Protocol):
    """One client connection: parse requests with httptools, answer each as it completes."""

    def __init__(self, server: SystemServer) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.url = bytearray()
        self.idle: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not an asyncio.Transport
        self.server._connections.add(self)
        self._arm_idle_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self.server._connections.discard(self)
        if self.idle is not None:
            self.idle.cancel()

    def data_received(self, data: bytes) -> None:
        self._arm_idle_timer()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._send(400, b'{"error":"upgrade not supported"}', JSON, keep_alive=False)
        except httptools.HttpParserError:
            self._send(400, b'{"error":"bad request"}', JSON, keep_alive=False)

    # httptools callbacks
    def on_message_begin(self) -> None:
        self.url.clear()

    def on_url(self, url: bytes) -> None:
        self.url += url
        if len(self.url) > MAX_URL:
            self._send(414, b'{"error":"uri too long"}', JSON, keep_alive=False)

    def on_message_complete(self) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        method = self.parser.get_method().decode("ascii", "replace")
        path = self.url.decode("latin-1")
        status, body, content_type = self.server.respond(method, path)
        self._send(status, b"" if method == "HEAD" else body, content_type,
                   self.parser.should_keep_alive(), length=len(body))

    def _send(self, status: int, body: bytes, content_type: str, keep_alive: bool, length: int | None = None) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        head = (f"HTTP/1.1 {status} {REASONS.get(status, 'Unknown')}\r\n"
                f"Content-Type: {content_type}\r\nContent-Length: {len(body) if length is None else length}\r\n"
                f"Cache-Control: no-store\r\nConnection: {'keep-alive' if keep_alive else 'close'}\r\n")
        if status == 405:
            head += "Allow: GET, HEAD\r\n"
        self.transport.write(head.encode("latin-1") + b"\r\n" + body)
        if not keep_alive:
            self.transport.close()

    def _arm_idle_timer(self) -> None:
        if self.idle is not None:
            self.idle.cancel()
        self.idle = asyncio.get_running_loop().call_later(IDLE_TIMEOUT_S, self.close)

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()
