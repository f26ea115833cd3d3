"""Engine capabilities are types: each engine has exactly the ones its roles rely on, and roles pick by them."""

from __future__ import annotations

import asyncio

import pytest

from services.worker.args import parse
from services.worker.roles import role_factory
from shared.engine.base import Engine
from shared.engine.capabilities import BootstrapKv, Embedder, ImageEncoder, KvExport, KvImport
from shared.engine.diffusion.config import DiffusionConfig
from shared.engine.diffusion.engine import DiffusionEngine
from shared.engine.mock import MockConfig, MockEngine
from shared.engine.reference import ReferenceConfig, ReferenceEngine
from shared.engine.sglang import SglangEngine
from shared.engine.sglang.args import KvEventsSettings, SglangConfig
from shared.errors import EngineError

CAPABILITIES = (Embedder, KvExport, KvImport, BootstrapKv, ImageEncoder)


def engines() -> dict[str, Engine]:
    sgl = SglangConfig(model_path="/m", argv=(), parsed=False, page_size=16, disaggregation_mode="null",
                       kv_events=KvEventsSettings("ipc:///tmp/x"))
    return {"mock": MockEngine(MockConfig()), "reference": ReferenceEngine(ReferenceConfig(model_path="/m")),
            "diffusion": DiffusionEngine(DiffusionConfig(model_path="/m")), "sglang": SglangEngine(sgl)}


def test_each_engine_has_exactly_its_capabilities():
    has = {name: {c.__name__ for c in CAPABILITIES if isinstance(e, c)} for name, e in engines().items()}
    assert has == {
        "mock": {"Embedder"},
        "reference": {"Embedder", "KvExport", "KvImport", "ImageEncoder"},
        "diffusion": set(),
        "sglang": {"Embedder", "BootstrapKv"},
    }


@pytest.mark.parametrize(("engine", "mode", "role"), [
    ("reference", "decode", "services.worker.roles.decode"),
    ("sglang", "decode", "services.worker.roles.sglang_pair"),
    ("reference", "prefill", "services.worker.roles.prefill"),
    ("mock", "null", "services.worker.roles.aggregated"),
])
def test_the_role_follows_the_engines_capabilities(engine, mode, role):
    cfg = parse(["--model-path", "/m", "--disaggregation-mode", mode])
    assert role_factory(cfg, engines()[engine]).__module__ == role


def test_a_role_refuses_an_engine_without_its_capability():
    from services.worker.roles.embedding import embedding_role
    from services.worker.roles.prefill import prefill_role

    cfg = parse(["--model-path", "/m", "--embedding"])
    diffusion = engines()["diffusion"]
    for make in (embedding_role, prefill_role):
        with pytest.raises(EngineError, match="diffusion"):
            asyncio.run(make(None, cfg, diffusion))  # type: ignore[arg-type]
