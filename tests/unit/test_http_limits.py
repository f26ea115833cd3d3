"""shared.http's limits for slow and many clients, and CORS: real loopback sockets, raw where bytes matter."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from shared.http import HttpServer, Request, Response
from shared.http.cors import Cors, CorsPolicy


async def ok(req: Request) -> Response:
    return Response(200, b'{"ok":true}')


@pytest.fixture
async def server(request: pytest.FixtureRequest) -> AsyncIterator[HttpServer]:
    s = HttpServer(ok, "127.0.0.1", 0, **getattr(request, "param", {}))
    await s.start()
    yield s
    await s.stop(grace=1.0)


async def _closed_while_trickling(port: int, give_up_s: float) -> bool:
    """Send a request head one header at a time, never finishing it; True when the server closes first."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(b"GET / HTTP/1.1\r\nhost: x\r\n")
        for i in range(int(give_up_s / 0.1)):
            try:
                if await asyncio.wait_for(reader.read(1), 0.1) == b"":
                    return True
            except TimeoutError:
                pass
            writer.write(b"x-slow-%d: 1\r\n" % i)  # data keeps arriving: a per-read timer would never fire
        return False
    except ConnectionError:
        return True
    finally:
        writer.close()


@pytest.mark.parametrize("server", [{"header_timeout": 0.5}], indirect=True)
async def test_a_head_not_complete_within_the_header_timeout_is_closed(server: HttpServer) -> None:
    assert await _closed_while_trickling(server.port, give_up_s=20.0)


@pytest.mark.parametrize("server", [{"header_timeout": 0.5}], indirect=True)
async def test_a_complete_request_on_a_kept_alive_connection_is_not_cut(server: HttpServer) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        for _ in range(2):
            writer.write(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
            head = await reader.readuntil(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200")
            await reader.readexactly(11)
            await asyncio.sleep(0.3)  # idle between requests is the keep-alive's business, not the head's
    finally:
        writer.close()


@pytest.mark.parametrize("server", [{"max_connections": 2}], indirect=True)
async def test_connections_over_the_limit_get_503(server: HttpServer) -> None:
    conns = [await asyncio.open_connection("127.0.0.1", server.port) for _ in range(2)]
    await asyncio.sleep(0.1)  # both accepted
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        assert (await reader.read()).startswith(b"HTTP/1.1 503")
    finally:
        writer.close()
        for _, w in conns:
            w.close()


def _req(method: str, headers: dict[str, str]) -> Request:
    return Request(method, "/v1/chat/completions", "", headers, b"", None)


POLICY = CorsPolicy(origins=("https://app.example",))


async def test_preflight_from_an_allowed_origin_gets_the_allow_headers() -> None:
    resp = await Cors(ok, POLICY)(_req("OPTIONS", {
        "origin": "https://app.example", "access-control-request-method": "POST",
        "access-control-request-headers": "Content-Type, Authorization"}))
    headers = dict(resp.headers or [])
    assert resp.status == 204 and headers["access-control-allow-origin"] == "https://app.example"
    assert "POST" in headers["access-control-allow-methods"]
    assert {"authorization", "content-type"} <= set(headers["access-control-allow-headers"].split(", "))


@pytest.mark.parametrize("headers", [
    {"origin": "https://evil.example", "access-control-request-method": "POST"},
    {"origin": "https://app.example", "access-control-request-method": "DELETE"},
    {"origin": "https://app.example", "access-control-request-method": "POST", "access-control-request-headers": "x-y"},
])
async def test_other_preflights_get_no_allow_headers(headers: dict[str, str]) -> None:
    resp = await Cors(ok, POLICY)(_req("OPTIONS", headers))
    assert resp.status == 403 and "access-control-allow-origin" not in dict(resp.headers or [])


async def test_simple_requests_carry_allow_origin_only_for_allowed_origins() -> None:
    allowed = await Cors(ok, POLICY)(_req("POST", {"origin": "https://app.example"}))
    other = await Cors(ok, POLICY)(_req("POST", {"origin": "https://evil.example"}))
    assert dict(allowed.headers or [])["access-control-allow-origin"] == "https://app.example"
    assert "access-control-allow-origin" not in dict(other.headers or [])
    assert (await Cors(ok, CorsPolicy(("*",)))(_req("GET", {"origin": "https://x"}))).headers == [
        ("access-control-allow-origin", "*"), ("vary", "Origin")]
