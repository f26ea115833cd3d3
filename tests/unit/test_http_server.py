"""shared.http over real loopback sockets: aiohttp as the client, raw sockets where framing matters."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
import pytest
import uvloop

from shared.http import HttpServer, Request, Response, StreamingResponse
from shared.http.response import Handler

Start = Callable[..., Awaitable[str]]
pytestmark = pytest.mark.filterwarnings("ignore:Overriding the \"event_loop_policy\" fixture:DeprecationWarning")


@pytest.fixture(params=["asyncio", "uvloop"], scope="module")
def event_loop_policy(request: pytest.FixtureRequest) -> asyncio.AbstractEventLoopPolicy:
    """Every test runs on both loops: production uses uvloop, whose transports behave a little differently."""
    return uvloop.EventLoopPolicy() if request.param == "uvloop" else asyncio.DefaultEventLoopPolicy()


@pytest.fixture
async def serve() -> AsyncIterator[Start]:
    """serve(handler, **opts) -> base URL; every server started is stopped at teardown."""
    servers: list[HttpServer] = []

    async def start(handler: Handler, **opts: object) -> str:
        server = HttpServer(handler, "127.0.0.1", 0, **opts)  # type: ignore[arg-type]
        servers.append(server)
        port = await server.start()
        return f"http://127.0.0.1:{port}"

    start.servers = servers  # type: ignore[attr-defined]
    yield start
    for server in servers:
        await server.stop(grace=1.0)


@pytest.fixture
async def client() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def echo(req: Request) -> Response:
    body = json.dumps({"method": req.method, "path": req.path, "query": req.query, "body": req.body.decode(),
                       "headers": req.headers, "client": list(req.client or ())}).encode()
    return Response(200, body, headers=[("X-Echo", "1")])


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


async def raw_exchange(port: int, data: bytes, until_close: bool = True, expect: int = 0) -> bytes:
    """Send `data`, read until the server closes (or `expect` bytes arrived)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    out = b""
    try:
        while until_close or len(out) < expect:
            got = await asyncio.wait_for(reader.read(65536), 5)
            if not got:
                break
            out += got
    finally:
        writer.close()
    return out


# --- requests and keep-alive ---

async def test_get_with_query(serve: Start, client: aiohttp.ClientSession) -> None:
    url = await serve(echo)
    async with client.get(url + "/v1/models?x=1&y=2") as r:
        assert r.status == 200
        assert r.headers["X-Echo"] == "1"
        got = await r.json()
    assert (got["method"], got["path"], got["query"], got["body"]) == ("GET", "/v1/models", "x=1&y=2", "")


async def test_post_content_length_body(serve: Start, client: aiohttp.ClientSession) -> None:
    url = await serve(echo)
    async with client.post(url + "/v1/chat", data=b'{"a": 1}', headers={"Authorization": "Bearer k"}) as r:
        got = await r.json()
    assert got["body"] == '{"a": 1}'
    assert got["headers"]["authorization"] == "Bearer k"
    assert got["headers"]["content-length"] == "8"


async def test_post_chunked_body(serve: Start, client: aiohttp.ClientSession) -> None:
    url = await serve(echo)

    async def parts() -> AsyncIterator[bytes]:
        for p in (b"hello ", b"chunked ", b"world"):
            yield p

    async with client.post(url + "/c", data=parts()) as r:
        got = await r.json()
    assert got["headers"]["transfer-encoding"] == "chunked"
    assert got["body"] == "hello chunked world"


async def test_keepalive_reuses_one_connection(serve: Start) -> None:
    url = await serve(echo)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1)) as session:
        clients = set()
        for _ in range(5):
            async with session.get(url + "/") as r:
                clients.add(tuple((await r.json())["client"]))
    assert len(clients) == 1


async def test_pipelined_requests_answered_in_order(serve: Start) -> None:
    async def slow_first(req: Request) -> Response:
        if req.path == "/1":
            await asyncio.sleep(0.05)
        return Response(200, req.path.encode(), "text/plain")

    url = await serve(slow_first)
    reqs = b"".join(b"GET /%d HTTP/1.1\r\nHost: x\r\n\r\n" % i for i in (1, 2, 3))
    out = await raw_exchange(port_of(url), reqs + b"GET /4 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert out.count(b"HTTP/1.1 200 OK") == 4
    bodies = [part.split(b"\r\n\r\n", 1)[1][:2] for part in out.split(b"HTTP/1.1 ")[1:]]
    assert bodies == [b"/1", b"/2", b"/3", b"/4"]
    assert out.rstrip().endswith(b"/4")


async def test_http10_closes_unless_keepalive(serve: Start) -> None:
    url = await serve(echo)
    out = await raw_exchange(port_of(url), b"GET /a HTTP/1.0\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 200 OK") and b"connection: close" in out


async def test_expect_continue(serve: Start) -> None:
    url = await serve(echo)
    reader, writer = await asyncio.open_connection("127.0.0.1", port_of(url))
    try:
        writer.write(b"POST /e HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
        interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 2)
        assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
        writer.write(b"hello")
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 2)
        assert head.startswith(b"HTTP/1.1 200 OK")
    finally:
        writer.close()


# --- errors ---

def assert_openai_error(body: bytes, code: int) -> None:
    err = json.loads(body)["error"]
    assert err["code"] == code and err["message"]
    assert err["type"] == ("invalid_request_error" if code < 500 else "server_error")


async def test_body_over_limit_by_content_length(serve: Start, client: aiohttp.ClientSession) -> None:
    url = await serve(echo, max_body_bytes=1024)
    async with client.post(url + "/big", data=b"x" * 200_000) as r:
        assert r.status == 413
        assert_openai_error(await r.read(), 413)
    async with client.post(url + "/small", data=b"x" * 10) as r:
        assert r.status == 200


async def test_chunked_body_over_limit(serve: Start, client: aiohttp.ClientSession) -> None:
    url = await serve(echo, max_body_bytes=1024)
    chunk = b"x" * 600
    req = b"POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    req += (b"%x\r\n%b\r\n" % (len(chunk), chunk)) * 2
    out = await raw_exchange(port_of(url), req)
    assert out.startswith(b"HTTP/1.1 413 ")
    assert_openai_error(out.split(b"\r\n\r\n", 1)[1], 413)
    async with client.get(url + "/after") as r:
        assert r.status == 200


async def test_malformed_request_gets_400(serve: Start, client: aiohttp.ClientSession) -> None:
    url = await serve(echo)
    out = await raw_exchange(port_of(url), b"NOT AN HTTP REQUEST\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 400 ")
    assert b"connection: close" in out
    assert_openai_error(out.split(b"\r\n\r\n", 1)[1], 400)
    async with client.get(url + "/after") as r:
        assert r.status == 200


async def test_head_over_limit_gets_431(serve: Start, client: aiohttp.ClientSession) -> None:
    url = await serve(echo, max_header_bytes=1024)
    out = await raw_exchange(port_of(url), b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"y" * 2000 + b"\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 431 ")
    async with client.get(url + "/after") as r:
        assert r.status == 200


async def test_handler_exception_gives_500(serve: Start, client: aiohttp.ClientSession,
                                           caplog: pytest.LogCaptureFixture) -> None:
    async def broken(req: Request) -> Response:
        if req.path == "/boom":
            raise RuntimeError("boom")
        return Response(200, b"{}")

    url = await serve(broken)
    async with client.get(url + "/boom") as r:
        assert r.status == 500
        assert_openai_error(await r.read(), 500)
    assert any("http_handler_failed" in rec.getMessage() for rec in caplog.records)
    async with client.get(url + "/ok") as r:
        assert r.status == 200


async def test_exception_mid_stream_closes_connection(serve: Start, client: aiohttp.ClientSession) -> None:
    async def handler(req: Request) -> StreamingResponse:
        async def chunks() -> AsyncIterator[bytes]:
            yield b"data: 1\n\n"
            raise RuntimeError("producer died")
        return StreamingResponse(200, chunks())

    url = await serve(handler)
    async with client.get(url + "/s") as r:
        assert r.status == 200
        with pytest.raises(aiohttp.ClientPayloadError):
            await r.read()


# --- streaming ---

def sse_handler(n: int, delay: float = 0.0) -> Handler:
    async def handler(req: Request) -> StreamingResponse:
        async def chunks() -> AsyncIterator[bytes]:
            for i in range(n):
                if delay:
                    await asyncio.sleep(delay)
                yield b"data: %d\n\n" % i
                yield b""  # empty items are skipped, not sent as the terminating chunk
        return StreamingResponse(200, chunks())
    return handler


async def test_stream_in_order_and_chunked(serve: Start, client: aiohttp.ClientSession) -> None:
    url = await serve(sse_handler(20))
    async with client.get(url + "/s") as r:
        assert r.headers["Transfer-Encoding"] == "chunked"
        assert r.headers["Content-Type"] == "text/event-stream"
        assert r.headers["Cache-Control"] == "no-cache"
        assert r.headers["X-Accel-Buffering"] == "no"
        body = await r.read()
    assert body == b"".join(b"data: %d\n\n" % i for i in range(20))
    out = await raw_exchange(port_of(url), b"GET /s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    framed = out.split(b"\r\n\r\n", 1)[1]
    assert framed.startswith(b"9\r\ndata: 0\n\n\r\n9\r\ndata: 1\n\n\r\n")
    assert framed.endswith(b"a\r\ndata: 19\n\n\r\n0\r\n\r\n")


async def test_client_disconnect_mid_stream_runs_producer_finally(serve: Start) -> None:
    seen: dict[str, object] = {}
    stop = asyncio.Event()

    async def handler(req: Request) -> StreamingResponse:
        seen["request"] = req

        async def chunks() -> AsyncIterator[bytes]:
            try:
                yield b"data: first\n\n"
                await stop.wait()  # an upstream that never produces again
                yield b"data: never\n\n"
            finally:
                seen["finally_at"] = time.monotonic()
        return StreamingResponse(200, chunks())

    url = await serve(handler)
    reader, writer = await asyncio.open_connection("127.0.0.1", port_of(url))
    writer.write(b"GET /s HTTP/1.1\r\nHost: x\r\n\r\n")
    await asyncio.wait_for(reader.readuntil(b"data: first\n\n"), 2)
    closed_at = time.monotonic()
    writer.close()
    for _ in range(100):
        if "finally_at" in seen:
            break
        await asyncio.sleep(0.005)
    assert seen["finally_at"] - closed_at < 0.1  # type: ignore[operator]
    req = seen["request"]
    assert isinstance(req, Request) and req.disconnected.is_set()


async def test_client_disconnect_cancels_waiting_handler(serve: Start) -> None:
    ended = asyncio.Event()

    async def handler(req: Request) -> Response:
        try:
            await asyncio.sleep(30)  # e.g. waiting for a worker before the first token
        finally:
            ended.set()
        return Response(200)

    url = await serve(handler)
    server: HttpServer = serve.servers[0]  # type: ignore[attr-defined]
    _reader, writer = await asyncio.open_connection("127.0.0.1", port_of(url))
    writer.write(b"POST /wait HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}")
    while server.in_flight == 0:
        await asyncio.sleep(0.005)
    writer.close()
    await asyncio.wait_for(ended.wait(), 0.1)
    await asyncio.sleep(0)
    assert server.in_flight == 0


async def test_slow_reader_stops_pulls(serve: Start) -> None:
    pulls = 0
    chunk = b"x" * 16384

    async def handler(req: Request) -> StreamingResponse:
        async def chunks() -> AsyncIterator[bytes]:
            nonlocal pulls
            while True:
                pulls += 1
                yield chunk
        return StreamingResponse(200, chunks(), "application/octet-stream")

    url = await serve(handler)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port_of(url)))
    reader, writer = await asyncio.open_connection(sock=sock, limit=1024)
    try:
        writer.write(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
        await asyncio.sleep(0.3)
        stalled = pulls
        await asyncio.sleep(0.3)
        assert pulls == stalled  # the server waits for the socket to drain before asking for more
        assert stalled < 1000  # bounded by socket buffers, not by the producer
        for _ in range(200):  # a slow read lets it pull again
            await reader.read(65536)
        await asyncio.sleep(0.05)
        assert pulls > stalled
    finally:
        writer.close()


# --- graceful stop ---

async def test_stop_waits_for_in_flight_stream(serve: Start, client: aiohttp.ClientSession) -> None:
    url = await serve(sse_handler(6, delay=0.05))
    server: HttpServer = serve.servers[0]  # type: ignore[attr-defined]
    async with client.get(url + "/s") as r:
        first = await r.content.readuntil(b"\n\n")
        assert server.in_flight == 1
        stopping = asyncio.create_task(server.stop(grace=5.0))
        await asyncio.sleep(0.02)
        with pytest.raises(aiohttp.ClientConnectionError):
            async with aiohttp.ClientSession() as other, other.get(url + "/late"):
                pass
        rest = await r.read()
    assert first + rest == b"".join(b"data: %d\n\n" % i for i in range(6))
    await asyncio.wait_for(stopping, 2)
    assert server.in_flight == 0


async def test_stop_closes_idle_keepalive_and_cuts_streams_after_grace(serve: Start) -> None:
    finished = asyncio.Event()

    async def handler(req: Request) -> Response | StreamingResponse:
        if req.path == "/idle":
            return Response(200, b"{}")

        async def forever() -> AsyncIterator[bytes]:
            try:
                while True:
                    yield b"data: x\n\n"
                    await asyncio.sleep(0.02)
            finally:
                finished.set()
        return StreamingResponse(200, forever())

    url = await serve(handler)
    server: HttpServer = serve.servers[0]  # type: ignore[attr-defined]
    port = port_of(url)
    idle_reader, idle_writer = await asyncio.open_connection("127.0.0.1", port)
    idle_writer.write(b"GET /idle HTTP/1.1\r\nHost: x\r\n\r\n")
    assert (await idle_reader.readuntil(b"{}")).startswith(b"HTTP/1.1 200")
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /forever HTTP/1.1\r\nHost: x\r\n\r\n")
    await reader.readuntil(b"data: x\n\n")
    stopping = asyncio.create_task(server.stop(grace=2.0))
    assert await asyncio.wait_for(idle_reader.read(), 1.5) == b""  # idle keep-alive closed at once,
    assert not stopping.done()  # while the stream still has its grace
    await asyncio.wait_for(stopping, 5)  # then cut at the grace's end
    assert finished.is_set()
    writer.close()
    idle_writer.close()
