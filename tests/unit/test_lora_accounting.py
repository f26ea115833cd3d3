"""LoRA without math: the mock engine's adapter accounting and the worker's SGLang-named flags."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from protocol.messages import EngineRequest, StopConditions
from services.worker.args import parse
from shared.engine.base import EngineError
from shared.engine.mock import MockConfig, MockEngine


def _req(rid: str, lora: str = "", n: int = 4) -> EngineRequest:
    return EngineRequest(request_id=rid, token_ids=list(range(1, 40)), stop=StopConditions(max_tokens=n), lora=lora)


async def _run(eng: MockEngine, req: EngineRequest) -> int:
    chunks = [c async for c in eng.generate(req)]
    return chunks[-1].usage.cached_tokens


def test_the_mock_engine_serves_loaded_adapters_in_their_own_cache() -> None:
    async def main() -> None:
        eng = MockEngine(MockConfig(speedup=100.0, enable_lora=True, lora_paths={"a": "/a"}))
        await eng.start()
        try:
            assert [await _run(eng, _req(f"r{i}", lo)) for i, lo in enumerate(["a", "a", ""])] == [0, 32, 0]
            with pytest.raises(EngineError, match="not loaded"):
                await _run(eng, _req("x", "b"))
            await eng.load_lora("b", "/b")
            assert eng.lora_names() == ["a", "b"] and await _run(eng, _req("y", "b")) == 0
            running = asyncio.create_task(_run(eng, _req("long", "a", n=2000)))
            await asyncio.sleep(0.01)
            await eng.unload_lora("a")  # waits for `long` to finish in the engine
            assert eng.lora_names() == ["b"]
            await eng.stop()  # a request still running now would fail with "engine stopped"
            assert await asyncio.wait_for(running, 5) == 32  # a's cached prefix
        finally:
            await eng.stop()

    asyncio.run(main())


def test_lora_off_refuses_loading() -> None:
    with pytest.raises(EngineError, match="enable-lora"):
        asyncio.run(MockEngine(MockConfig()).load_lora("a", "/a"))


def test_worker_flags_reach_the_engine_and_sglang_gets_them_back(tmp_path: Path) -> None:
    flags = ["--lora-paths", "a=/ad/a", "/ad/b", "--max-loras-per-batch", "4"]
    cfg = parse(["--model-path", str(tmp_path), "--engine", "reference", *flags])
    opts = cfg.engine.lora
    assert opts.enable_lora and opts.adapters == {"a": "/ad/a", "/ad/b": "/ad/b"}
    assert opts.max_loras_per_batch == 4
    extra = parse(["--model-path", str(tmp_path), "--engine", "sglang", "--enable-lora", *flags]).engine.extra_args
    assert extra[extra.index("--lora-paths"):][:3] == ["--lora-paths", "a=/ad/a", "/ad/b"]
    assert "--enable-lora" in extra and extra[extra.index("--max-loras-per-batch") + 1] == "4"


def test_the_diffusion_engine_refuses_lora_flags(tmp_path: Path) -> None:
    with pytest.raises(SystemExit):
        parse(["--model-path", str(tmp_path), "--engine", "diffusion", "--enable-lora"])
