"""SGLang's request structs for unit tests where SGLang is not installed (CPU CI)."""

from __future__ import annotations

import sys
from types import ModuleType

import pytest


def stub_io_struct(monkeypatch: pytest.MonkeyPatch, **classes: type) -> None:
    """`sglang.srt.managers.io_struct` holding `classes` (its parents stubbed too unless SGLang is there)."""
    mod = ModuleType("sglang.srt.managers.io_struct")
    for name, cls in classes.items():
        setattr(mod, name, cls)
    if "sglang" not in sys.modules:
        for name in ("sglang", "sglang.srt", "sglang.srt.managers"):
            monkeypatch.setitem(sys.modules, name, ModuleType(name))
    monkeypatch.setitem(sys.modules, "sglang.srt.managers.io_struct", mod)
