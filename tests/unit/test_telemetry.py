"""Telemetry as a service's operator sees it: the system port, log lines, traces across NATS headers."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator

import pytest
import structlog
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from shared.telemetry import metrics
from shared.telemetry.logging import configure_logging, get_logger
from shared.telemetry.system_server import SystemServer
from shared.telemetry.tracing import configure_tracing, extract_context, inject_headers, span


async def http(port: int, *requests: str) -> list[tuple[int, dict[str, str], bytes]]:
    """Send raw requests on ONE connection (keep-alive); return (status, headers, body) each."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    out = []
    try:
        for req in requests:
            writer.write(req.encode())
            await writer.drain()
            status_line = await reader.readline()
            headers: dict[str, str] = {}
            while (line := await reader.readline()) not in (b"\r\n", b""):
                k, _, v = line.decode().partition(":")
                headers[k.strip().lower()] = v.strip()
            length = 0 if req.startswith("HEAD") else int(headers["content-length"])
            out.append((int(status_line.split()[1]), headers, await reader.readexactly(length)))
    finally:
        writer.close()
    return out


def get(path: str, method: str = "GET") -> str:
    return f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"


class Flag:
    value = False


@pytest.fixture
async def system() -> AsyncIterator[tuple[SystemServer, int, Flag]]:
    flag = Flag()
    server = SystemServer("127.0.0.1", 0, ready=lambda: flag.value, health=lambda: {"instance_id": "abc"})
    port = await server.start()
    yield server, port, flag
    await server.stop()


async def test_health_and_live_answer_while_running(system: tuple[SystemServer, int, Flag]) -> None:
    _, port, _ = system
    (s1, h1, b1), (s2, _, b2) = await http(port, get("/health"), get("/live"))
    assert s1 == s2 == 200
    assert h1["content-type"] == "application/json"
    assert json.loads(b1) == json.loads(b2) == {"status": "ok", "instance_id": "abc"}


async def test_ready_follows_the_readiness_gate(system: tuple[SystemServer, int, Flag]) -> None:
    _, port, flag = system
    [(before, _, _)] = await http(port, get("/ready"))
    flag.value = True
    [(after, _, body)] = await http(port, get("/ready"))
    assert (before, after) == (503, 200)
    assert json.loads(body)["status"] == "ready"


async def test_metrics_shows_registered_metrics(system: tuple[SystemServer, int, Flag]) -> None:
    _, port, _ = system
    metrics.counter("shoal_test_scrapes", "test counter", ["role"]).labels(role="decode").inc(2)
    [(status, headers, body)] = await http(port, get("/metrics"))
    assert status == 200
    assert headers["content-type"].startswith("text/plain")
    assert 'shoal_test_scrapes_total{role="decode"} 2.0' in body.decode()


async def test_unknown_path_wrong_method_and_head(system: tuple[SystemServer, int, Flag]) -> None:
    _, port, _ = system
    (missing, _, _), (post, post_h, _), (head, head_h, head_body) = await http(
        port, get("/nope"), get("/health", "POST").replace("\r\n\r\n", "\r\nContent-Length: 0\r\n\r\n"),
        get("/health", "HEAD"))
    assert (missing, post, head) == (404, 405, 200)
    assert post_h["allow"] == "GET, HEAD"
    assert head_body == b"" and int(head_h["content-length"]) > 0


async def test_bad_request_closes_the_connection(system: tuple[SystemServer, int, Flag]) -> None:
    _, port, _ = system
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"NOT HTTP AT ALL\r\n\r\n")
    data = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    assert data.startswith(b"HTTP/1.1 400")


async def test_stop_closes_the_port() -> None:
    server = SystemServer("127.0.0.1", 0, ready=lambda: True)
    port = await server.start()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)  # an idle keep-alive client
    await server.stop()
    assert await asyncio.wait_for(reader.read(), 5) == b""
    writer.close()
    with pytest.raises(OSError):
        await asyncio.open_connection("127.0.0.1", port)


def test_metric_factories_return_the_same_metric() -> None:
    m = metrics.Metrics(metrics.CollectorRegistry())
    assert m.histogram("shoal_t_latency", "d", ["model"]) is m.histogram("shoal_t_latency", "d", ["model"])
    with pytest.raises(ValueError, match="already exists as a Histogram"):
        m.gauge("shoal_t_latency", "d", ["model"])
    with pytest.raises(ValueError, match="labels"):
        m.histogram("shoal_t_latency", "d", ["other"])


def test_observe_many_is_n_observations() -> None:
    """A batch's per-token latencies in one update: the same buckets, count and sum as one observe per token."""
    m = metrics.Metrics(metrics.CollectorRegistry())
    one = m.histogram("shoal_t_one", "d", ["model"], buckets=(0.001, 0.01, 0.1)).labels("x")
    many = m.histogram("shoal_t_many", "d", ["model"], buckets=(0.001, 0.01, 0.1)).labels("x")
    for value, n in [(0.0005, 3), (0.01, 5), (0.05, 1), (7.0, 4), (0.002, 0)]:
        for _ in range(n):
            one.observe(value)
        metrics.observe_many(many, value, n)

    def samples(name: str) -> list[tuple[str, dict[str, str], float]]:
        [family] = [f for f in m.registry.collect() if f.name == name]
        return [(s.name.replace(name, ""), s.labels, s.value) for s in family.samples if "created" not in s.name]

    got, want = samples("shoal_t_many"), samples("shoal_t_one")
    assert [(n, lab) for n, lab, _ in got] == [(n, lab) for n, lab, _ in want]
    assert [v for _, _, v in got] == pytest.approx([v for _, _, v in want])
    assert [v for n, lab, v in got if n == "_bucket"] == [1 * 3, 3 + 5, 3 + 5 + 1, 13]


def test_render_includes_the_multiprocess_directory(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    code = "from prometheus_client import Counter; Counter('sglang_t_tokens', 'd').inc(3)"
    env = {"PROMETHEUS_MULTIPROC_DIR": str(tmp_path), "PATH": ""}
    subprocess.run([sys.executable, "-c", code], env=env, check=True, timeout=60)
    m = metrics.Metrics(metrics.CollectorRegistry())
    m.counter("shoal_t_own", "d").inc()
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    body, _ = m.render()
    assert "sglang_t_tokens_total 3.0" in body.decode()
    assert "shoal_t_own_total 1.0" in body.decode()


@pytest.fixture
def log_output() -> Iterator[io.StringIO]:
    out = io.StringIO()
    configure_logging("debug", json=True, service="decode", stream=out)
    yield out
    root = logging.getLogger()
    for h in [h for h in root.handlers if h.get_name() == "shoal"]:
        root.removeHandler(h)
    structlog.reset_defaults()


def lines(out: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in out.getvalue().splitlines()]


def test_json_logs_are_events_with_service_and_logger(log_output: io.StringIO) -> None:
    get_logger("shoal.test").info("request_routed", worker="w1", overlap_blocks=3)
    [event] = lines(log_output)
    assert event["event"] == "request_routed" and event["overlap_blocks"] == 3
    assert event["service"] == "decode" and event["logger"] == "shoal.test" and event["level"] == "info"
    assert event["timestamp"].endswith("Z") and "T" in event["timestamp"]


def test_secrets_never_reach_the_log(log_output: io.StringIO) -> None:
    log = get_logger("shoal.test")
    log.info("connecting", nats_password="hunter2", token="s3cret-token", api_key="sk-abc",
             headers={"Authorization": "Bearer xyz"}, url="nats://bob:pa55@127.0.0.1:4222",
             prompt_tokens=12, token_ids=[1, 2])
    logging.getLogger("nats").warning("connect to %s failed", "nats://alice:pw0rd@127.0.0.1:4222")
    text = log_output.getvalue()
    for secret in ("hunter2", "s3cret-token", "sk-abc", "xyz", "pa55", "pw0rd"):
        assert secret not in text
    event, stdlib_event = lines(log_output)
    assert event["nats_password"] == event["token"] == "***"
    assert event["url"] == "nats://bob:***@127.0.0.1:4222"
    assert event["prompt_tokens"] == 12 and event["token_ids"] == [1, 2]  # not secrets
    assert stdlib_event["logger"] == "nats" and "alice:***@" in stdlib_event["event"]


def test_console_tracebacks_do_not_show_local_secrets(log_output: io.StringIO) -> None:
    out = io.StringIO()
    configure_logging("info", json=False, stream=out)

    def connect(password: str) -> None:
        raise ConnectionError("refused")

    try:
        connect("hunter" + "2")  # built at run time: the source line is in the traceback
    except ConnectionError:
        get_logger("shoal.test").exception("connect_failed")
    assert "ConnectionError: refused" in out.getvalue()
    assert "hunter2" not in out.getvalue()


def test_noisy_libraries_log_only_warnings(log_output: io.StringIO) -> None:
    logging.getLogger("nats").info("chatter")
    logging.getLogger("asyncio").debug("chatter")
    get_logger("shoal.test").debug("kept")
    assert [e["event"] for e in lines(log_output)] == ["kept"]


def test_traceparent_round_trip_continues_the_trace(spans: InMemorySpanExporter) -> None:
    with span("frontend.request") as parent:
        headers = inject_headers({"other": "kept"})
    with span("worker.generate", context=extract_context(headers), attributes={"request_id": "r1"}) as child:
        pass
    assert headers["other"] == "kept"
    assert child.get_span_context().trace_id == parent.get_span_context().trace_id
    finished = {s.name: s for s in spans.get_finished_spans()}
    assert finished["worker.generate"].parent.span_id == parent.get_span_context().span_id
    assert finished["worker.generate"].attributes["request_id"] == "r1"


def test_an_exception_marks_the_span_as_error(spans: InMemorySpanExporter) -> None:
    with pytest.raises(RuntimeError), span("failing"):
        raise RuntimeError("boom")
    [failed] = spans.get_finished_spans()
    assert not failed.status.is_ok


def test_missing_or_broken_traceparent_starts_a_new_trace(spans: InMemorySpanExporter) -> None:
    for headers in (None, {}, {"traceparent": "garbage"}, {"traceparent": "00-" + "0" * 32 + "-" + "1" * 16 + "-01"}):
        with span("worker.generate", context=extract_context(headers)) as s:
            assert s.get_span_context().is_valid
        assert spans.get_finished_spans()[-1].parent is None


def test_without_exporter_the_callers_trace_passes_through() -> None:
    configure_tracing("test", None)
    incoming = {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}
    with span("worker.generate", context=extract_context(incoming)) as s:
        forwarded = inject_headers({})
    assert not s.is_recording()
    assert forwarded == incoming
    with span("root"):
        assert inject_headers({}) == {}  # nothing recorded, nothing to propagate
