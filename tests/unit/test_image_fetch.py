"""Issue 22, findings 6, 8, 17: image fetching on a real loopback server (in-process, asyncio).

SSRF (private targets refused after resolution and on every redirect, generic errors), deadlines that
close the transfer, size caps, and the pixel limit checked from the header before any decoding.
"""

from __future__ import annotations

import asyncio
import struct
import threading
import zlib
from collections.abc import Awaitable, Callable

import pytest

from shared.errors import EngineError
from shared.multimodal.fetch import ImageFetcher, MediaOptions, public
from shared.multimodal.image import ImageSpec, preprocess
from tests.images import png

OK = png(1, (16, 16))
Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class Server:
    """A loopback server whose answer depends on the path; records requests and when connections closed."""

    def __init__(self) -> None:
        self.requests: list[str] = []
        self.closed: list[float] = []
        self.port = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        loop = asyncio.get_running_loop()
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            path = head.split(b" ")[1].decode()
            self.requests.append(path)
            if path == "/ok.png":
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(OK) + OK)
            elif path == "/chunked.png":
                writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                             + b"".join(b"%x\r\n%s\r\n" % (len(OK[i:i + 50]), OK[i:i + 50])
                                        for i in range(0, len(OK), 50)) + b"0\r\n\r\n")
            elif path == "/big.png":
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 999999999\r\n\r\n")
            elif path.startswith("/redirect"):
                writer.write(b"HTTP/1.1 302 Found\r\nLocation: %s\r\nContent-Length: 0\r\n\r\n"
                             % path.split("=", 1)[1].encode())
            elif path == "/banner":
                writer.write(b'INFO {"server_id":"SECRET-BANNER","port":4222}\r\n')
            elif path == "/slow.png":
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n")
                for _ in range(1000):  # a byte every 50 ms: far longer than any deadline here
                    writer.write(b"x")
                    await writer.drain()
                    await asyncio.sleep(0.05)
            else:
                writer.write(b"HTTP/1.1 404 Not Found at port 31337\r\nContent-Length: 0\r\n\r\n")
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self.closed.append(loop.time())
            writer.close()


async def serve(fn: Callable[[Server], Awaitable[None]]) -> None:
    s = Server()
    server = await asyncio.start_server(s.handle, "127.0.0.1", 0)
    s.port = server.sockets[0].getsockname()[1]
    async with server:
        await fn(s)


def fetcher(**kw: object) -> ImageFetcher:
    return ImageFetcher(MediaOptions(**kw))  # type: ignore[arg-type]


async def refused(f: ImageFetcher, url: str, why: str) -> str:
    with pytest.raises(EngineError, match=why) as e:
        await f.fetch(url)
    assert e.value.code.value == "bad_request"
    return str(e.value)


def test_private_targets_are_refused_by_default_in_every_spelling() -> None:
    async def main(s: Server) -> None:
        f = fetcher()
        for host in ("127.0.0.1", "localhost", "2130706433", "0x7f.0.0.1", "0177.0.0.1", "127.1", "[::1]",
                     "[::ffff:127.0.0.1]", "0.0.0.0"):
            await refused(f, f"http://{host}:{s.port}/ok.png", "not allowed")
        assert s.requests == []  # nothing connected
        for url in ("http://169.254.169.254/latest/meta-data", "http://10.0.0.1/x", "http://192.168.1.1/x",
                    "http://224.0.0.1/x", "http://[fe80::1]/x", "http://[fc00::1]/x", "http://100.64.0.1/x"):
            await refused(f, url, "not allowed")
        for url in ("ftp://127.0.0.1/x.png", "file:///etc/passwd", "gopher://x/", "http:///x.png"):
            await refused(f, url, "http")

    asyncio.run(serve(main))
    assert public("8.8.8.8") and public("2001:4860:4860::8888")
    assert not any(public(a) for a in ("127.0.0.1", "10.1.2.3", "172.16.0.1", "::1", "::ffff:10.0.0.1",
                                       "2002:7f00:1::", "0.0.0.0", "255.255.255.255", "198.18.0.1"))


def test_allowed_domains_are_trusted_but_every_redirect_is_checked_again() -> None:
    async def main(s: Server) -> None:
        f = fetcher(allowed_media_domains=["localhost"])
        base = f"http://localhost:{s.port}"
        assert await f.fetch(base + "/ok.png") == OK
        assert await f.fetch(base + "/chunked.png") == OK
        assert await f.fetch(f"{base}/redirect=/ok.png") == OK  # a redirect within the trusted host
        await refused(f, f"{base}/redirect=http://127.0.0.1:{s.port}/ok.png", "not allowed")
        await refused(f, f"{base}/redirect=ftp://localhost/ok.png", "http")
        await refused(f, f"http://127.0.0.1:{s.port}/ok.png", "allowed-media-domains")
        assert s.requests.count("/ok.png") == 2  # the redirected-to loopback address was never asked
        await refused(f, f"{base}/redirect={base}/redirect={base}/redirect={base}/redirect={base}/ok.png",
                      "redirected more than")

    asyncio.run(serve(main))


def test_errors_reflect_no_status_port_or_banner_and_sizes_are_capped() -> None:
    async def main(s: Server) -> None:
        assert len(OK) > 500
        f = fetcher(allow_private_media=True, max_image_bytes=500)
        msg = await refused(f, f"http://127.0.0.1:{s.port}/missing", "did not return an image")
        assert "404" not in msg and "31337" not in msg and str(s.port) not in msg
        msg = await refused(f, f"http://127.0.0.1:{s.port}/banner", "did not answer with HTTP")
        assert "SECRET" not in msg and "INFO" not in msg and "4222" not in msg
        await refused(f, f"http://127.0.0.1:{s.port}/big.png", "larger than 500")
        await refused(f, f"http://127.0.0.1:{s.port}/chunked.png", "larger than 500")
        await refused(f, "data:image/png;base64," + "A" * 2000, "larger than 500")

    asyncio.run(serve(main))


def test_a_deadline_closes_the_transfer_and_leaves_no_thread_running() -> None:
    async def main(s: Server) -> None:
        before = set(threading.enumerate())
        f = fetcher(allow_private_media=True, fetch_timeout=0.5, max_concurrent_fetches=2)
        results = await asyncio.gather(*(f.fetch(f"http://127.0.0.1:{s.port}/slow.png") for _ in range(6)),
                                       return_exceptions=True)
        assert all(isinstance(r, EngineError) and "timed out" in str(r) for r in results), results
        end = asyncio.get_running_loop().time()
        for _ in range(100):  # the server notices each closed connection at its next write
            if len(s.closed) == s.requests.count("/slow.png"):
                break
            await asyncio.sleep(0.05)
        assert len(s.closed) == s.requests.count("/slow.png") >= 2
        assert max(s.closed) < end + 1.0  # closed at the deadline, not when the server finished (50 s)
        # no thread holds a transfer (getaddrinfo's idle executor thread aside)
        assert [t.name for t in set(threading.enumerate()) - before if not t.name.startswith("asyncio_")] == []
        assert await f.fetch("data:image/png;base64,iVBORw0KGgo=") == b"\x89PNG\r\n\x1a\n"

    asyncio.run(serve(main))


def huge_png_header(width: int, height: int) -> bytes:
    """A PNG that says it is width x height (its header is all PIL reads before decoding)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 100)) + \
        chunk(b"IEND", b"")


def test_an_8192_square_png_is_refused_from_its_header_before_decoding(monkeypatch) -> None:
    from PIL import Image

    def never(*args: object, **kw: object) -> None:
        raise AssertionError("decoding started")

    monkeypatch.setattr(Image.Image, "load", never)
    monkeypatch.setattr(Image.Image, "convert", never)
    with pytest.raises(EngineError, match="larger than 16777216 pixels"):
        preprocess(huge_png_header(8192, 8192), ImageSpec())
    with pytest.raises(EngineError, match="larger than 100 pixels"):
        preprocess(OK, ImageSpec(), max_pixels=100)
