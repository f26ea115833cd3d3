"""A library that sets Python logging up its own way (SGLang does, as its engine starts) does not make
shoal's worker log print its lines twice, and loses none of them."""

from __future__ import annotations

import io
import logging
import sys

import pytest

from shared.telemetry.logging import configure_logging


@pytest.fixture
def clean_logging():
    root = logging.getLogger()
    before = list(root.handlers)
    yield
    for h in [h for h in root.handlers if h not in before]:
        root.removeHandler(h)
    for h in before:
        if h not in root.handlers:
            root.addHandler(h)
    logging.getLogger("sglang.srt.fake").handlers.clear()


def test_a_librarys_console_handlers_do_not_echo_its_lines(clean_logging, monkeypatch):
    out = io.StringIO()
    monkeypatch.setattr(sys, "stderr", out)
    configure_logging("info", json=True, service="decode", stream=out)
    # what SGLang's configure_logger does in the worker's process as its engine starts
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s] %(message)s", force=True)
    logging.getLogger("sglang.srt.fake").addHandler(logging.StreamHandler(sys.stderr))
    configure_logging("info", json=True, service="decode", stream=out)  # the worker takes logging back

    logging.getLogger("sglang.srt.fake").info("Load weight end. mem usage=%d GB", 3)
    lines = [ln for ln in out.getvalue().splitlines() if "Load weight end" in ln]
    assert len(lines) == 1 and '"service": "decode"' in lines[0] and "mem usage=3 GB" in lines[0]
