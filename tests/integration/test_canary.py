"""Canary health checks: a worker whose engine stops answering takes itself out of routing, and comes back.

Worker A runs the mock engine with its test-only hang file (SHOAL_TEST_MOCK_HANG_FILE): while the file
exists, A's engine stands still. Both workers send themselves a canary after 1 s without serving. Once A's
canary times out, A's /ready is false and the frontend routes every user request to B; when the file goes,
A's next canary passes and the frontend sends it requests again.
"""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Callable

from services.frontend.http_errors import WORKER_HEADER
from shared.cluster.procs import ServiceProc, spawn
from shared.engine.mock import HANG_FILE_ENV

CANARY = ("--canary-interval", "1", "--canary-timeout", "1")


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.loads(r.read())


def served_by(base: str, model: str) -> str:
    """Send one completion; the instance that served it."""
    body = {"model": model, "prompt": "which worker are you", "max_tokens": 4}
    req = urllib.request.Request(base + "/v1/completions", json.dumps(body).encode(),
                                 {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        assert json.loads(r.read())["usage"]["completion_tokens"] == 4
        return r.headers[WORKER_HEADER]


def wait_until(cond: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    end = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < end, f"never: {what}"
        time.sleep(0.1)


def instance_id(proc: ServiceProc) -> str:
    return get_json(f"http://127.0.0.1:{proc.system_port}/health")["worker_id"]


def test_canary_takes_a_hung_worker_out_of_routing_until_it_answers_again(cluster, tmp_path):
    hang = tmp_path / "hang"
    a = spawn("worker-a", "decode", [*cluster.common, "--engine", "mock", "--model-path", str(cluster.model),
                                     *CANARY], cluster.log_dir, env={HANG_FILE_ENV: str(hang)})
    cluster.procs.append(a)
    a.wait_ready(60)
    b = cluster.worker(*CANARY)
    cluster.frontend()  # round-robin
    routable = lambda: get_json(cluster.url + "/health")["instances"]  # noqa: E731
    wait_until(lambda: routable() == 2, "the frontend sees both workers")
    a_id, b_id = instance_id(a), instance_id(b)
    assert {served_by(cluster.url, cluster.model_name) for _ in range(4)} == {a_id, b_id}

    hang.touch()  # A's engine stops answering; no user request is in flight
    wait_until(lambda: not a.ready(), "A's canary fails and A is not ready")
    wait_until(lambda: routable() == 1, "the frontend takes A out of routing")
    assert b.ready()
    assert [served_by(cluster.url, cluster.model_name) for _ in range(6)] == [b_id] * 6

    hang.unlink()  # A answers again: its next canary passes
    wait_until(a.ready, "A is ready again")
    wait_until(lambda: routable() == 2, "the frontend routes to A again")
    assert a_id in {served_by(cluster.url, cluster.model_name) for _ in range(4)}
