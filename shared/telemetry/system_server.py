"""Each service's system port: /health (/live), /ready, /metrics, on the same HTTP server as the API (shared.http).

    server = SystemServer("127.0.0.1", 0, ready=lambda: engine_ready)
    port = await server.start()
    ...
    await server.stop()

GET and HEAD only, keep-alive, no request bodies; an orchestrator's probes
and a Prometheus scrape are all it serves.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec

from shared.http import HttpServer, Request
from shared.http import Response as HttpResponse
from shared.telemetry.logging import get_logger
from shared.telemetry.metrics import render_metrics

log = get_logger("shoal.system")

IDLE_TIMEOUT_S = 60.0
MAX_HEADER_BYTES = 8192  # probes and scrapes send small heads
JSON = "application/json"
TEXT = "text/plain; charset=utf-8"

Response = tuple[int, bytes, str]


class SystemServer:
    def __init__(self, host: str, port: int, ready: Callable[[], bool],
                 health: Callable[[], dict[str, Any]] | None = None) -> None:
        self.host = host
        self.port = port
        self._ready = ready
        self._health = health
        self._server: HttpServer | None = None

    async def start(self) -> int:
        """Listen; returns the bound port (a free one when port is 0)."""
        self._server = HttpServer(self._handle, self.host, self.port, max_body_bytes=0,
                                  max_header_bytes=MAX_HEADER_BYTES, keepalive_timeout=IDLE_TIMEOUT_S)
        self.port = await self._server.start()
        log.info("system_server_started", host=self.host, port=self.port)
        return self.port

    async def stop(self) -> None:
        if self._server is None:
            return
        server, self._server = self._server, None
        await server.stop(grace=0.5)
        log.info("system_server_stopped", port=self.port)

    async def _handle(self, req: Request) -> HttpResponse:
        status, body, content_type = self.respond(req.method, req.path)
        headers = [("cache-control", "no-store")]
        if status == 405:
            headers.append(("allow", "GET, HEAD"))
        return HttpResponse(status, body, content_type, headers)

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
