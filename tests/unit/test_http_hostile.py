"""shared.http against hostile clients (issue 22): trickled bodies, floods of header lines, pipelined bulk."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from shared.http import HttpServer, Request, Response


@pytest.fixture
async def server(request: pytest.FixtureRequest) -> AsyncIterator[HttpServer]:
    async def ok(req: Request) -> Response:
        return Response(200, b'{"ok":true}')

    s = HttpServer(ok, "127.0.0.1", 0, **getattr(request, "param", {}))
    await s.start()
    yield s
    await s.stop(grace=1.0)


@pytest.mark.parametrize("server", [{"body_timeout": 0.5}], indirect=True)
async def test_a_body_trickled_past_the_body_timeout_is_closed(server: HttpServer) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        writer.write(b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 1000\r\n\r\n")
        closed = False
        for _ in range(200):  # one byte every 0.05 s: each resets the keep-alive timer, never the body deadline
            try:
                writer.write(b"x")
                await writer.drain()
                if await asyncio.wait_for(reader.read(1), 0.05) == b"":
                    closed = True
                    break
            except TimeoutError:
                pass
            except ConnectionError:
                closed = True
                break
        assert closed
    finally:
        writer.close()


async def _status(port: int, raw: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(raw)
        return (await asyncio.wait_for(reader.readuntil(b"\r\n"), 10))[9:12]
    finally:
        writer.close()


@pytest.mark.parametrize("server", [{"max_headers": 20}], indirect=True)
async def test_too_many_header_lines_get_431_even_when_empty(server: HttpServer) -> None:
    assert await _status(server.port, b"GET / HTTP/1.1\r\nhost: x\r\n" + b"a:\r\n" * 19 + b"\r\n") == b"200"
    assert await _status(server.port, b"GET / HTTP/1.1\r\nhost: x\r\n" + b"a:\r\n" * 20 + b"\r\n") == b"431"
    assert await _status(server.port, b"GET / HTTP/1.1\r\nhost: x\r\n" + b"a:\r\n" * 30000 + b"\r\n") == b"431"


@pytest.mark.parametrize("server", [{"max_headers": 100_000, "max_header_bytes": 64 * 1024}], indirect=True)
async def test_empty_header_lines_count_against_the_head_bytes(server: HttpServer) -> None:
    # 20,000 empty values: 60 kB of names and values alone would fit 64 KiB; with each line's framing they do not
    assert await _status(server.port, b"GET / HTTP/1.1\r\nhost: x\r\n" + b"a:\r\n" * 20000 + b"\r\n") == b"431"


async def test_pipelined_requests_stop_being_read_past_the_byte_budget() -> None:
    release = asyncio.Event()
    served: list[int] = []

    async def slow(req: Request) -> Response:
        await release.wait()
        served.append(len(req.body))
        return Response(200, b"{}")

    s = HttpServer(slow, "127.0.0.1", 0, max_pipelined_bytes=100_000)
    await s.start()
    reader, writer = await asyncio.open_connection("127.0.0.1", s.port)
    try:
        body = b"x" * 60_000
        one = b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: %d\r\n\r\n%b" % (len(body), body)
        writer.write(one * 6)  # the first is handled, two queue (120 kB > 100 kB), then reading pauses
        await asyncio.sleep(0.5)
        conn = next(iter(s._state.connections))  # type: ignore[union-attr]
        assert conn._read_paused and len(conn._pending) <= 3
        release.set()
        for _ in range(6):
            await asyncio.wait_for(reader.readuntil(b"\r\n\r\n{}"), 10)
        assert served == [60_000] * 6
    finally:
        writer.close()
        await s.stop(grace=1.0)
