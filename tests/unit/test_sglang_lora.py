"""LoRA on SGLang without a GPU: adapters named by its flags, load/unload through a fake tokenizer manager."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from types import SimpleNamespace

import pytest

from protocol.messages import EngineRequest, StopConditions
from shared.engine.base import EngineError
from shared.engine.sglang.args import SglangConfig
from shared.engine.sglang.engine import SglangEngine
from shared.engine.sglang.lora import adapters_of
from tests.sglang_stub import stub_io_struct


@pytest.fixture
def io_struct(monkeypatch: pytest.MonkeyPatch) -> None:
    """SGLang's request structs, where SGLang is not installed (CPU CI)."""
    @dataclass
    class LoadLoRAAdapterReqInput:
        lora_name: str
        lora_path: str

    @dataclass
    class UnloadLoRAAdapterReqInput:
        lora_name: str

    stub_io_struct(monkeypatch, LoadLoRAAdapterReqInput=LoadLoRAAdapterReqInput,
                   UnloadLoRAAdapterReqInput=UnloadLoRAAdapterReqInput)


class FakeTokenizerManager:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    async def load_lora_adapter(self, obj, _request):
        self.calls.append(("load", obj.lora_name))
        ok = obj.lora_path != "/bad"
        return SimpleNamespace(success=ok, error_message="" if ok else "no adapter there")

    async def unload_lora_adapter(self, obj, _request):
        self.calls.append(("unload", obj.lora_name))
        return SimpleNamespace(success=True, error_message="")


def test_adapters_named_by_sglangs_flags() -> None:
    argv = ["--tp", "2", "--lora-paths", "a=/x/a", "/x/b", '{"lora_name": "c", "lora_path": "/x/c"}', "--dp", "1"]
    got = adapters_of(argv)
    assert got.enabled and got.paths == {"a": "/x/a", "/x/b": "/x/b", "c": "/x/c"}
    assert adapters_of(["--enable-lora"]).enabled and not adapters_of(["--tp", "1"]).enabled


def test_load_and_unload_reach_sglangs_tokenizer_manager(io_struct: None) -> None:
    eng = SglangEngine(SglangConfig(model_path="/m", argv=("--enable-lora",), parsed=False, page_size=16))
    tm = FakeTokenizerManager()
    eng.sgl = SimpleNamespace(tokenizer_manager=tm)

    async def main() -> None:
        await eng.load_lora("a", "/x/a")
        assert eng.lora_names() == ["a"]
        with pytest.raises(EngineError, match="no adapter there"):
            await eng.load_lora("b", "/bad")
        assert eng.lora_names() == ["a"]
        await eng.unload_lora("a")
        assert eng.lora_names() == [] and tm.calls == [("load", "a"), ("load", "b"), ("unload", "a")]
        req = EngineRequest(request_id="r", token_ids=[1], stop=StopConditions(max_tokens=1), lora="a")
        with pytest.raises(EngineError, match="not loaded"):
            await anext(eng.generate(req))

    asyncio.run(main())
