"""The diffusion engine in-process on the tiny diffusion model: batching, thresholds, seeds, stops, aborts."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from protocol.messages import EngineRequest, OutputChunk, SamplingOptions, StopConditions
from shared.engine.base import EngineError
from shared.engine.diffusion.config import DiffusionConfig
from shared.engine.diffusion.engine import DiffusionEngine

T = TypeVar("T")
PROMPTS = [[97], [98, 99, 100, 101, 102], list(range(40, 70))]


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    from shared.model.tiny import make_tiny

    yield make_tiny(tmp_path_factory.mktemp("dllm") / "m", seed=2, diffusion=True)


def request(rid: str, prompt: list[int], max_tokens: int = 12, temperature: float = 0.0, seed: int | None = None,
            **stop: object) -> EngineRequest:
    return EngineRequest(rid, prompt, sampling=SamplingOptions(temperature=temperature, seed=seed),
                         stop=StopConditions(max_tokens=max_tokens, **stop))  # type: ignore[arg-type]


async def collect(engine: DiffusionEngine, req: EngineRequest) -> list[OutputChunk]:
    return [c async for c in engine.generate(req)]


def tokens(chunks: list[OutputChunk]) -> list[int]:
    return [t for c in chunks for t in c.token_ids]


def run(model: Path, fn: Callable[[DiffusionEngine], Awaitable[T]], **cfg: Any) -> T:
    """Start an engine with these settings, run `fn` on it, stop it."""
    async def main() -> T:
        engine = DiffusionEngine(DiffusionConfig(model_path=str(model), **cfg))
        await engine.start()
        try:
            return await fn(engine)
        finally:
            await engine.stop()
    return asyncio.run(main())


def test_blocks_stream_as_chunks_and_batching_changes_nothing(model: Path) -> None:
    async def body(e: DiffusionEngine) -> tuple[list, list]:
        alone = [await collect(e, request(f"a{i}", p)) for i, p in enumerate(PROMPTS)]
        together = await asyncio.gather(*(collect(e, request(f"b{i}", p)) for i, p in enumerate(PROMPTS)))
        return alone, together
    alone, together = run(model, body, steps=4)
    assert [tokens(c) for c in alone] == [tokens(c) for c in together]
    for chunks in alone:
        assert [len(c.token_ids) for c in chunks] == [8, 4]  # one chunk per block; the last cut at max_tokens
        assert chunks[-1].finish_reason == "length" and chunks[-1].usage.completion_tokens == 12
    assert len({tuple(tokens(c)) for c in alone}) == 3


def test_threshold_one_is_one_token_per_iteration_and_zero_is_one_shot(model: Path) -> None:
    async def body(e: DiffusionEngine) -> list[list[int]]:
        return [tokens(await collect(e, request(f"r{i}", p, max_tokens=16))) for i, p in enumerate(PROMPTS)]
    by_steps = {s: run(model, body, steps=s) for s in (1, 8)}
    assert by_steps[1] != by_steps[8]
    assert run(model, body, threshold=1.0) == by_steps[8]  # nothing is above 1: the single best, each time
    assert run(model, body, threshold=0.0) == by_steps[1]  # everything is above 0: the whole block at once


def test_a_seed_repeats_a_sampled_output(model: Path) -> None:
    async def body(e: DiffusionEngine) -> list[list[int]]:
        reqs = [request("s1", PROMPTS[1], temperature=1.5, seed=11), request("s2", PROMPTS[1], temperature=1.5,
                seed=11), request("s3", PROMPTS[1], temperature=1.5, seed=12), request("g", PROMPTS[1])]
        return [tokens(c) for c in await asyncio.gather(*(collect(e, r) for r in reqs))]
    a, b, c, greedy = run(model, body)
    assert a == b and a != c and a != greedy


def test_stop_token_ends_the_output_with_it_and_min_tokens_holds_it_back(model: Path) -> None:
    async def body(e: DiffusionEngine) -> tuple[list[int], list[OutputChunk], list[OutputChunk]]:
        free = tokens(await collect(e, request("f", PROMPTS[2], max_tokens=16)))
        stop = free[9]
        first = free.index(stop)
        stopped = await collect(e, request("s", PROMPTS[2], max_tokens=16, stop_token_ids=[stop]))
        held = await collect(e, request("m", PROMPTS[2], max_tokens=16, stop_token_ids=[stop], min_tokens=first + 1))
        return free, stopped, held
    free, stopped, held = run(model, body)
    first = free.index(free[9])
    assert tokens(stopped) == free[: first + 1]
    assert stopped[-1].finish_reason == "stop" and stopped[-1].stop_reason == free[9]
    assert stopped[-1].usage.completion_tokens == first + 1
    out = tokens(held)
    assert free[9] not in out[: first + 1]  # banned before min_tokens
    assert held[-1].finish_reason in ("stop", "length")


def test_abort_leaves_the_engine_at_once(model: Path) -> None:
    async def body(e: DiffusionEngine) -> tuple[int, int, list[int]]:
        gen = e.generate(request("long", PROMPTS[0], max_tokens=2000))
        first = await anext(gen)
        running = e.load().running
        await gen.aclose()
        after = e.load().running + e.load().waiting
        again = tokens(await collect(e, request("next", PROMPTS[0], max_tokens=4)))
        assert len(first.token_ids) == 8
        return running, after, again
    running, after, again = run(model, body)
    assert (running, after, len(again)) == (1, 0, 4)


def test_requests_no_engine_could_serve_are_refused(model: Path) -> None:
    async def body(e: DiffusionEngine) -> list[str]:
        codes = []
        for req in (request("e", []), request("v", [10_000]), request("c", [1] * 10, max_tokens=100)):
            try:
                with contextlib.suppress(StopAsyncIteration):
                    await anext(e.generate(req))
            except EngineError as err:
                codes.append(err.code)
        return codes
    assert run(model, body, context_length=64) == ["bad_request", "bad_request", "context_length_exceeded"]


def test_a_model_without_a_mask_token_is_refused_at_start(tmp_path: Path) -> None:
    from shared.model.tiny import make_tiny

    plain = make_tiny(tmp_path / "plain")

    async def start() -> None:
        engine = DiffusionEngine(DiffusionConfig(model_path=str(plain)))
        try:
            await engine.start()
        finally:
            await engine.stop()
    with pytest.raises(EngineError, match="--dllm-mask-token-id"):
        asyncio.run(start())
    assert run(plain, lambda e: collect(e, request("x", [97], max_tokens=3)), mask_token_id=260)[-1].usage \
        .completion_tokens == 3  # naming one (here <|system|>) is enough
