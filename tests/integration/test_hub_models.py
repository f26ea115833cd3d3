"""`shoal up --model-path ORG/NAME` serves a model from a Hugging Face cache, offline."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from shared.cluster.natsd import free_port
from tests.hub_cache import add_to_cache, offline_env


def _shoal(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "shared.cli", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=240)


def _post(url: str, body: dict) -> dict:
    req = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


@pytest.fixture
def hub_env(tmp_path: Path, tiny_model: Path) -> dict[str, str]:
    add_to_cache(tmp_path / "hf", "shoal-test/tiny", tiny_model)
    return offline_env(tmp_path / "hf")


def test_shoal_up_serves_a_hub_id_offline(tmp_path: Path, hub_env: dict[str, str], tiny_model: Path) -> None:
    port, nats_port = free_port(), free_port()
    ports = ["--http-port", str(port), "--nats-port", str(nats_port)]
    try:
        up = _shoal(["up", "--model-path", "shoal-test/tiny", *ports], tmp_path, hub_env)
        assert up.returncode == 0, up.stdout + up.stderr
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=5) as r:
            ids = [m["id"] for m in json.loads(r.read())["data"]]
        assert ids == ["shoal-test/tiny"]
        out = _post(f"http://127.0.0.1:{port}/v1/completions",
                    {"model": "shoal-test/tiny", "prompt": "hi", "max_tokens": 4, "temperature": 0})
        assert out["usage"]["completion_tokens"] == 4
        assert not (tmp_path / ".shoal" / "models").exists()  # no tiny model was made: the cache served
    finally:
        _shoal(["down"], tmp_path, hub_env)


def test_a_wrong_id_fails_start_up_naming_it(tmp_path: Path, hub_env: dict[str, str]) -> None:
    ports = ["--http-port", str(free_port()), "--nats-port", str(free_port())]
    try:
        up = _shoal(["up", "--model-path", "shoal-test/nope", *ports], tmp_path, hub_env)
    finally:
        _shoal(["down"], tmp_path, hub_env)
    assert up.returncode == 1
    assert "shoal-test/nope" in up.stdout and hub_env["HF_HUB_CACHE"] in up.stdout
