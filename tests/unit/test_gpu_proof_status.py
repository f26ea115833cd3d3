"""The GPU proof scripts exit non-zero when a check fails (tests/gpu/prove.py: emit + exit_status)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

PROVE = Path(__file__).resolve().parents[2] / "tests" / "gpu" / "prove.py"


@pytest.fixture()
def prove():  # a fresh module each time: FAILED is module state
    spec = importlib.util.spec_from_file_location("prove_under_test", PROVE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("fields", [{"all_equal": False}, {"ok": False}])
def test_a_failed_check_makes_the_exit_status_one(prove, fields: dict) -> None:
    prove.emit("check", **fields)
    assert prove.exit_status(0) == 1


def test_failed_steps_and_passing_checks(prove) -> None:
    prove.emit("a", all_equal=True, ok=True)
    assert prove.exit_status(0) == 0 and prove.exit_status(3) == 3
    prove.emit("cluster_failed", error="boom")
    assert prove.exit_status(0) == 1
