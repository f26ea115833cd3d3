"""The frontend's HTTP edge with real processes: HEAD on GET routes, CORS preflight, a slow head closed."""

from __future__ import annotations

import http.client
import socket
import time


def request(port: int, method: str, path: str, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request(method, path, headers=headers)
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def test_head_cors_and_header_timeout(cluster) -> None:
    cluster.worker()
    cluster.frontend("--cors-allowed-origins", "https://app.example", "--header-timeout", "1")
    cluster.wait_models()
    port = cluster.http_port

    for path in ("/v1/models", "/health", "/live", "/metrics", "/openapi.json"):
        status, headers, body = request(port, "HEAD", path, {})
        assert status == 200 and body == b"", path
        assert int(headers["content-length"]) > 0

    preflight = {"Origin": "https://app.example", "Access-Control-Request-Method": "POST",
                 "Access-Control-Request-Headers": "content-type,authorization"}
    status, headers, _ = request(port, "OPTIONS", "/v1/chat/completions", preflight)
    assert status == 204 and headers["access-control-allow-origin"] == "https://app.example"
    status, headers, _ = request(port, "OPTIONS", "/v1/chat/completions", {**preflight, "Origin": "https://evil.example"})
    assert status == 403 and "access-control-allow-origin" not in headers
    status, headers, _ = request(port, "GET", "/v1/models", {"Origin": "https://app.example"})
    assert status == 200 and headers["access-control-allow-origin"] == "https://app.example"

    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:  # 30 s: far past the 1 s header timeout
        s.sendall(b"POST /v1/completions HTTP/1.1\r\nhost: x\r\n")
        closed = False
        for i in range(100):
            try:
                s.sendall(b"x-slow-%d: 1\r\n" % i)
            except OSError:
                closed = True
                break
            s.settimeout(0.2)
            try:
                if s.recv(1) == b"":
                    closed = True
                    break
            except TimeoutError:
                pass
            except ConnectionResetError:  # closed with our unread headers in its buffer: the kernel sends RST
                closed = True
                break
            time.sleep(0.05)
        assert closed
