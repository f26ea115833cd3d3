"""Issue 22, findings 6, 8, 17 on real processes: a vision worker (EPD: it fetches and decodes itself)
that slow image servers, private addresses and decompression bombs cannot wedge.

The worker trusts `localhost` (--allowed-media-domains) so the test's loopback server can be reached by
that name; 127.0.0.1 stays refused, as every private address is by default.
"""

from __future__ import annotations

import http.server
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from shared.cluster.natsd import NatsServer
from tests.conftest import Cluster
from tests.images import png
from tests.integration.test_multimodal import chat, data_uri, image, text
from tests.unit.test_image_fetch import huge_png_header

FETCH_TIMEOUT_S = 3.0
SMALL = png(7, (16, 16))


class _Slow(http.server.BaseHTTPRequestHandler):
    asked: list[str] = []
    closed: list[float] = []  # when a slow transfer found its client gone

    def do_GET(self) -> None:
        _Slow.asked.append(self.path)
        if self.path == "/ok.png":
            self.send_response(200)
            self.send_header("Content-Length", str(len(SMALL)))
            self.end_headers()
            self.wfile.write(SMALL)
            return
        self.send_response(200)
        self.send_header("Content-Length", "100000")
        self.end_headers()
        try:
            for _ in range(600):  # a byte every 50 ms for 30 s
                self.wfile.write(b"x")
                self.wfile.flush()
                time.sleep(0.05)
        except OSError:
            _Slow.closed.append(time.monotonic())

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def slow_server() -> Iterator[int]:
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Slow)
    srv.daemon_threads = True
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield srv.server_address[1]
    srv.shutdown()


@pytest.fixture(scope="module")
def vlm(tiny_vlm: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    d = tmp_path_factory.mktemp("image-limits")
    nats = NatsServer(d / "nats", log_file=d / "nats.log").start()
    c = Cluster(nats, tiny_vlm, d / "logs")
    try:
        c.worker("--num-blocks", "256", "--allowed-media-domains", "localhost", "--fetch-timeout",
                 str(FETCH_TIMEOUT_S), "--drain-grace", "0", engine="reference")
        c.frontend("--drain-grace", "0")
        c.wait_models()
        yield c
    finally:
        c.stop()
        nats.stop()


def test_six_slow_image_servers_do_not_delay_a_small_data_image(vlm, slow_server):
    """Finding 6: the slow fetches end at their deadline (their sockets closed); a data: image meanwhile
    is answered well before that deadline."""
    results: list[tuple[int, dict]] = []
    started = time.monotonic()
    slow = [threading.Thread(target=lambda i=i: results.append(chat(
        vlm.url, vlm.model_name, [text("x"), image(f"http://localhost:{slow_server}/slow{i}.png")], 1)))
        for i in range(6)]
    for t in slow:
        t.start()
    while len([p for p in _Slow.asked if p.startswith("/slow")]) < 6 and time.monotonic() - started < 10:
        time.sleep(0.05)
    t0 = time.monotonic()
    status, body = chat(vlm.url, vlm.model_name, [text("what"), image(data_uri(SMALL))], 1)
    took = time.monotonic() - t0
    assert status == 200, body
    assert took < FETCH_TIMEOUT_S / 2, took  # not behind the slow fetches (they end at the fetch deadline)
    for t in slow:
        t.join(30)
    assert [s for s, _ in results] == [400] * 6, results
    assert all("timed out" in b["error"]["message"] for _, b in results), results
    for _ in range(40):
        if len(_Slow.closed) >= 6:
            break
        time.sleep(0.1)
    assert len(_Slow.closed) >= 6 and max(_Slow.closed) < started + FETCH_TIMEOUT_S + 3.0  # not after 30 s


def test_private_addresses_are_refused_by_default(vlm, slow_server):
    """Finding 8: 127.0.0.1 (not in --allowed-media-domains) is refused before any connection."""
    for host in ("127.0.0.1", "2130706433", "[::1]"):
        status, body = chat(vlm.url, vlm.model_name, [text("x"), image(f"http://{host}:{slow_server}/ok.png")], 1)
        assert status == 400 and "not allowed" in body["error"]["message"], body
        assert str(slow_server) not in body["error"]["message"]
    assert "/ok.png" not in _Slow.asked
    status, body = chat(vlm.url, vlm.model_name, [text("x"), image(f"http://localhost:{slow_server}/ok.png")], 1)
    assert status == 200, body


def test_a_decompression_bomb_and_too_many_images_are_refused_before_decoding(vlm):
    """Finding 17: an 8192x8192 PNG is refused from its header; more images than allowed, by count."""
    bomb = data_uri(huge_png_header(8192, 8192))
    status, body = chat(vlm.url, vlm.model_name, [text("x"), image(bomb)], 1)
    assert status == 400 and "larger than" in body["error"]["message"], body
    status, body = chat(vlm.url, vlm.model_name, [text("x"), *[image(data_uri(SMALL))] * 9], 1)
    assert status == 400 and "max-images-per-request" in body["error"]["message"], body
    status, body = chat(vlm.url, vlm.model_name, [text("x"), image(data_uri(SMALL))], 1)
    assert status == 200, body
