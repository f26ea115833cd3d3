"""Issue 22, findings 1 and 10: run-time LoRA management is an admin surface that never stalls a worker.

One module cluster: a reference worker with run-time updates on (adapters under --lora-root, at most 2
loaded) and a frontend with an inference key and a separate admin key. A load whose source is slow
(SHOAL_TEST_LORA_SLOW_FETCH: the fetch thread sleeps past the 3 s lease) must leave the worker's
streams, lease and /health untouched.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from shared.cluster.natsd import NatsServer
from shared.cluster.procs import spawn
from tests.conftest import Cluster
from tests.lora_adapters import make_adapter, make_wrong_shape_adapter

INFERENCE_KEY, ADMIN_KEY = "inference-key-1", "admin-key-2"
SLOW_S = 5.0  # longer than the worker's lease (3 s): on the event loop the worker would be lost


def call(url: str, body: dict | None = None, key: str = INFERENCE_KEY, timeout: float = 60) -> tuple[int, dict]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data, {"Content-Type": "application/json", "Authorization": f"Bearer {key}"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def streamed(url: str, n: int) -> int:
    """Stream a completion of n tokens; the tokens its usage counts."""
    req = urllib.request.Request(url + "/v1/completions", json.dumps({
        "model": "tiny", "prompt": [4, 5], "max_tokens": n, "temperature": 0, "ignore_eos": True,
        "stream": True, "stream_options": {"include_usage": True}}).encode(),
        {"Content-Type": "application/json", "Authorization": f"Bearer {INFERENCE_KEY}"})
    with urllib.request.urlopen(req, timeout=30) as r:
        usage = [json.loads(line[6:])["usage"] for line in r if line.startswith(b"data: {") and b'"usage"' in line]
    return usage[-1]["completion_tokens"] if usage else 0


@pytest.fixture(scope="module")
def admin_cluster(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Cluster, Path]]:
    d = tmp_path_factory.mktemp("lora-admin")
    root = d / "root"
    good = make_adapter(tiny_model, root / "c", seed=3)
    (root / "slow").symlink_to(good)  # the same adapter, from a slow source
    make_wrong_shape_adapter(good, root / "bad")  # another model's down_proj: one output row too many
    make_adapter(tiny_model, d / "outside", seed=4)
    (d / "admin.key").write_text(ADMIN_KEY + "\n")
    nats = NatsServer(d / "nats", log_file=d / "nats.log").start()
    c = Cluster(nats, tiny_model, d / "logs")
    try:
        p = spawn("worker", "decode", [*c.common, "--engine", "reference", "--model-path", str(tiny_model),
                                       "--enable-lora", "--enable-lora-runtime-updates", "--lora-root", str(root),
                                       "--max-loaded-loras", "2", "--drain-grace", "0"], c.log_dir,
                  env={"SHOAL_TEST_LORA_SLOW_FETCH": f"slow={SLOW_S}"})
        c.procs.append(p)
        p.wait_ready(120)
        c.frontend("--api-key", INFERENCE_KEY, "--enable-lora-runtime-updates", "--admin-api-key-file",
                   str(d / "admin.key"), "--drain-grace", "0")
        c.wait_models()
        yield c, d
    finally:
        c.stop()
        nats.stop()


def test_a_slow_adapter_load_leaves_streams_lease_and_health_alone(admin_cluster):
    """Finding 1: the fetch runs in a thread under a deadline; a second load meanwhile is refused (429)."""
    c, _ = admin_cluster
    url, worker = c.url, c.procs[0]
    done: list[tuple[int, dict]] = []
    loader = threading.Thread(target=lambda: done.append(call(url + "/v1/load_lora_adapter",
                                                              {"lora_name": "slow", "lora_path": "slow"}, ADMIN_KEY)))
    loader.start()
    time.sleep(0.5)
    status, err = call(url + "/v1/load_lora_adapter", {"lora_name": "c2", "lora_path": "c"}, ADMIN_KEY)
    assert status == 429 and "being loaded" in err["error"]["message"], err
    latencies, instances = [], []
    while loader.is_alive():
        t0 = time.monotonic()
        assert streamed(url, 4) == 4  # a normal stream on the same worker, whole within the second
        with urllib.request.urlopen(f"http://127.0.0.1:{worker.system_port}/health", timeout=5) as r:
            assert r.status == 200
        with urllib.request.urlopen(url + "/health", timeout=5) as r:
            instances.append(json.loads(r.read()).get("instances", 0))
        latencies.append(time.monotonic() - t0)
        time.sleep(0.1)
    loader.join()
    assert done and done[0][0] == 200 and "slow" in done[0][1]["loaded_adapters"], done
    assert len(latencies) >= 5 and max(latencies) < 1.0, latencies
    assert min(instances) == 1, instances  # the worker's lease never lapsed
    status, body = call(url + "/v1/completions", {"model": "slow", "prompt": [4, 5], "max_tokens": 2})
    assert status == 200, body
    status, body = call(url + "/v1/unload_lora_adapter", {"lora_name": "slow"}, ADMIN_KEY)
    assert status == 200, body


def test_adapter_admin_needs_its_own_key_a_safe_name_a_path_under_the_root_and_a_cap(admin_cluster):
    """Finding 10 (and 2: an adapter of the wrong shape is refused and breaks nothing)."""
    c, d = admin_cluster
    load, unload = c.url + "/v1/load_lora_adapter", c.url + "/v1/unload_lora_adapter"
    status, err = call(load, {"lora_name": "c", "lora_path": "c"}, INFERENCE_KEY)  # the inference key: no
    assert status == 401, err
    status, err = call(load, {"lora_name": "c", "lora_path": "c"}, "wrong")
    assert status == 401, err
    status, err = call(c.url + "/v1/completions", {"model": "tiny", "prompt": [1], "max_tokens": 1}, ADMIN_KEY)
    assert status == 401, err  # and the admin key is no inference key
    for name in ("", "tiny", "a b", "../x", "x" * 65):
        status, err = call(load, {"lora_name": name, "lora_path": "c"}, ADMIN_KEY)
        assert status == 400 and err["error"]["param"] == "lora_name", (name, err)
    for path in (str(d / "outside"), "../outside", "/etc", "/no/such/adapter"):
        status, err = call(load, {"lora_name": "o", "lora_path": path}, ADMIN_KEY)
        msg = err["error"]["message"]
        assert status == 400 and "--lora-root" in msg and "No such file" not in msg and "Errno" not in msg, err
    status, err = call(load, {"lora_name": "bad", "lora_path": "bad"}, ADMIN_KEY)  # finding 2: checked, alone
    assert status == 400 and "down_proj" in err["error"]["message"], err
    status, body = call(load, {"lora_name": "c", "lora_path": str(d / "root" / "c")}, ADMIN_KEY)
    assert status == 200 and "c" in body["loaded_adapters"] and "bad" not in body["loaded_adapters"], body
    status, body = call(c.url + "/v1/completions", {"model": "c", "prompt": [4, 5], "max_tokens": 2})
    assert status == 200, body
    status, body = call(load, {"lora_name": "c2", "lora_path": "c"}, ADMIN_KEY)
    assert status == 200, body
    status, err = call(load, {"lora_name": "c3", "lora_path": "c"}, ADMIN_KEY)  # --max-loaded-loras 2
    assert status == 429, err
    status, err = call(unload, {"lora_name": "c"}, INFERENCE_KEY)
    assert status == 401, err
    for name in ("c", "c2"):
        status, body = call(unload, {"lora_name": name}, ADMIN_KEY)
        assert status == 200, body
