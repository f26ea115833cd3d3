"""HttpServer: listen, hand each connection to an HttpConnection, drain gracefully on stop."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from shared.http.connection import HttpConnection
from shared.http.response import Handler
from shared.http.state import ServerState

log = logging.getLogger("shoal.http")

_ABORT_WAIT_S = 1.0  # after grace, how long cancelled handlers get to run their finally blocks


class HttpServer:
    """A small HTTP/1.1 server.

        server = HttpServer(handler, "127.0.0.1", 0)
        port = await server.start()
        ...
        await server.stop(grace=10.0)
    """

    def __init__(self, handler: Handler, host: str = "127.0.0.1", port: int = 8000, *,
                 max_body_bytes: int = 16 * 2**20, max_header_bytes: int = 64 * 1024,
                 keepalive_timeout: float = 75.0, header_timeout: float = 10.0,
                 max_connections: int | None = None, backlog: int = 2048, body_timeout: float = 60.0,
                 max_headers: int = 100, max_pipelined_bytes: int = 2**20) -> None:
        self.handler = handler
        self.host = host
        self.port = port
        self.max_body_bytes = max_body_bytes
        self.max_header_bytes = max_header_bytes
        self.keepalive_timeout = keepalive_timeout
        self.header_timeout = header_timeout
        self.max_connections = max_connections
        self.backlog = backlog
        self.body_timeout = body_timeout
        self.max_headers = max_headers
        self.max_pipelined_bytes = max_pipelined_bytes
        self._server: asyncio.Server | None = None
        self._state: ServerState | None = None

    @property
    def in_flight(self) -> int:
        """Requests being handled now (streams included)."""
        return self._state.in_flight if self._state is not None else 0

    async def start(self) -> int:
        """Listen; returns the bound port (a free one when port is 0)."""
        loop = asyncio.get_running_loop()
        state = ServerState(self.handler, loop, self.max_body_bytes, self.max_header_bytes, self.keepalive_timeout,
                            self.header_timeout, self.max_connections, body_timeout=self.body_timeout,
                            max_headers=self.max_headers, max_pipelined_bytes=self.max_pipelined_bytes)
        self._state = state
        self._server = await loop.create_server(lambda: HttpConnection(state), self.host, self.port,
                                                backlog=self.backlog, reuse_address=True)
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("http_server_started host=%s port=%d", self.host, self.port)
        return self.port

    async def stop(self, grace: float = 10.0) -> None:
        """Stop accepting, close idle connections, let responses in progress finish for up to `grace` seconds."""
        server, state = self._server, self._state
        if server is None or state is None:
            return
        self._server = None
        server.close()
        state.draining = True
        for conn in list(state.connections):
            conn.shutdown()
        if not await _drained(state, grace):
            log.warning("http_drain_timeout in_flight=%d connections=%d", state.in_flight, len(state.connections))
            for conn in list(state.connections):
                conn.abort()
            await _drained(state, _ABORT_WAIT_S)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(server.wait_closed(), _ABORT_WAIT_S)
        state.close()
        log.info("http_server_stopped port=%d", self.port)


async def _drained(state: ServerState, timeout: float) -> bool:
    """Wait for no request in flight and every connection closed (its last bytes flushed)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    try:
        await asyncio.wait_for(state.idle.wait(), timeout)
    except TimeoutError:
        return False
    while state.connections and loop.time() < deadline:
        await asyncio.sleep(0.01)
    return not state.connections
