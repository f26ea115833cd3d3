"""Scale from zero on real processes (nats-server, frontend, planner with the local connector, mock workers):
the planner learns the model, parks it and drains to zero; the model stays listed; a request from no
workers starts one, waits for it and completes; the planner drains back to zero after the idle period."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request

from shared.cluster.procs import spawn
from tests.metrics import metric


def health(url: str) -> dict:
    with urllib.request.urlopen(url + "/health", timeout=5) as r:
        return json.loads(r.read())


def until(check, timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < end, f"timed out: {what}"
        time.sleep(0.1)


def test_a_parked_model_is_listed_and_a_request_from_zero_workers_completes(cluster):
    fe = cluster.frontend("--cold-start-wait", "60")
    planner = spawn("planner", "planner", [
        *cluster.common, "--connector", "local", "--worker-log-dir", str(cluster.log_dir),
        "--worker-args", f"--engine mock --model-path {cluster.model}", "--min-workers", "0",
        "--scale-to-zero-idle", "1", "--interval", "0.3"], cluster.log_dir)
    cluster.procs.append(planner)
    planner.wait_ready(30)
    until(lambda: cluster.model_name in health(cluster.url)["models"], 60, "the model parked")
    until(lambda: health(cluster.url)["instances"] == 0, 30, "the learning worker drained")
    with urllib.request.urlopen(cluster.url + "/v1/models", timeout=5) as r:
        assert cluster.model_name in [m["id"] for m in json.loads(r.read())["data"]]  # listed with no worker
    body = {"model": cluster.model_name, "prompt": [5, 6, 7], "max_tokens": 4}
    req = urllib.request.Request(cluster.url + "/v1/completions", json.dumps(body).encode(),
                                 {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=90) as r:
            answer = json.loads(r.read())
    except urllib.error.HTTPError as e:  # which 503: refused by the planner, timed out, or not parked
        raise AssertionError(f"{e.code}: {e.read()[:500]!r}") from e
    assert answer["usage"]["completion_tokens"] == 4
    assert metric(fe, "shoal_cold_start_wait_seconds_count", model=cluster.model_name, outcome="served") == 1
    until(lambda: health(cluster.url)["instances"] == 0, 30, "drained back to zero")
    assert cluster.model_name in health(cluster.url)["models"]
