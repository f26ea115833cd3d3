"""LoRA on the reference engine: base and adapters batched in one step equal transformers + peft (merged)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from protocol.messages import EngineRequest, SamplingOptions, StopConditions
from shared.engine.base import EngineError
from shared.engine.reference import ReferenceConfig, ReferenceEngine
from shared.engine.reference.lora import LoraError, read_adapter
from shared.kv.hashing import block_hashes, lora_root
from tests.lora_adapters import make_adapter, merged_greedy

N = 12  # new tokens per request


@pytest.fixture(scope="module")
def adapters(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("adapters")
    return {"a": make_adapter(tiny_model, d / "a", seed=1), "b": make_adapter(tiny_model, d / "b", seed=2, rank=8)}


def greedy(rid: str, prompt: list[int], lora: str = "", n: int = N) -> EngineRequest:
    return EngineRequest(request_id=rid, token_ids=prompt, sampling=SamplingOptions(temperature=0.0),
                         stop=StopConditions(max_tokens=n, ignore_eos=True), lora=lora)


async def run(eng: ReferenceEngine, req: EngineRequest) -> tuple[list[int], int]:
    chunks = [c async for c in eng.generate(req)]
    return [t for c in chunks for t in c.token_ids], chunks[-1].usage.cached_tokens


def engine(tiny_model: Path, adapters: dict[str, Path], **kw: object) -> ReferenceEngine:
    return ReferenceEngine(ReferenceConfig(model_path=str(tiny_model), num_blocks=256, enable_lora=True,
                                           lora_paths={k: str(v) for k, v in adapters.items()}, **kw))


def test_base_and_two_adapters_in_one_batch_equal_peft_merged(tiny_model, adapters):
    prompts = [[(7 * i + j) % 250 + 1 for j in range(5 + i)] for i in range(N)]
    loras = ["", "a", "b"] * 4

    async def main() -> list[list[int]]:
        eng = engine(tiny_model, adapters)
        await eng.start()
        try:
            outs = await asyncio.gather(*(run(eng, greedy(f"r{i}", p, lo)) for i, (p, lo) in
                                          enumerate(zip(prompts, loras, strict=True))))
        finally:
            await eng.stop()
        return [o for o, _ in outs]

    got = asyncio.run(main())
    for lora in ("", "a", "b"):
        rows = [i for i in range(N) if loras[i] == lora]
        want = merged_greedy(tiny_model, adapters[lora] if lora else None, [prompts[i] for i in rows], N)
        assert [got[i] for i in rows] == want, lora
    assert got[1] != got[0]  # the adapters change the output


def test_long_prefills_group_rows_by_adapter_and_still_equal_peft(tiny_model, adapters):
    prompts = [[(3 * j) % 250 + 1 for j in range(300)], [(5 * j) % 250 + 1 for j in range(290)]]

    async def main() -> list[list[int]]:
        eng = engine(tiny_model, adapters, max_batched_tokens=1024)
        await eng.start()
        try:
            outs = await asyncio.gather(run(eng, greedy("p0", prompts[0], "a", n=4)),
                                        run(eng, greedy("p1", prompts[1], "", n=4)))
        finally:
            await eng.stop()
        return [o for o, _ in outs]

    got = asyncio.run(main())
    assert got[0] == merged_greedy(tiny_model, adapters["a"], prompts[:1], 4)[0]
    assert got[1] == merged_greedy(tiny_model, None, prompts[1:], 4)[0]


def test_a_prompt_cached_under_one_adapter_is_not_cached_under_another(tiny_model, adapters):
    prompt = list(range(1, 70))

    async def main() -> list[int]:
        eng = engine(tiny_model, adapters)
        await eng.start()
        try:
            return [(await run(eng, greedy(f"c{i}", prompt, lora, n=2)))[1]
                    for i, lora in enumerate(["a", "b", "", "a", "b", ""])]
        finally:
            await eng.stop()

    cached = asyncio.run(main())
    assert cached[:3] == [0, 0, 0] and min(cached[3:]) == 64
    assert len({lora_root("a"), lora_root("b"), lora_root("")}) == 3
    assert block_hashes(prompt, 16, lora_root("a"))[0] != block_hashes(prompt, 16)[0]


def test_load_and_unload_at_run_time_wait_for_the_requests_using_it(tiny_model, adapters):
    async def main() -> None:
        eng = engine(tiny_model, {})
        await eng.start()
        try:
            with pytest.raises(EngineError):
                await run(eng, greedy("x", [1, 2, 3], "a"))
            await eng.load_lora("a", str(adapters["a"]))
            assert eng.lora_names() == ["a"]
            long = asyncio.create_task(run(eng, greedy("long", [1, 2, 3], "a", n=200)))
            await asyncio.sleep(0.05)
            await eng.unload_lora("a")  # waits for `long`
            assert long.done() and len(long.result()[0]) == 200
            assert eng.lora_names() == []
            with pytest.raises(EngineError, match="not loaded"):
                await run(eng, greedy("y", [1, 2, 3], "a"))
        finally:
            await eng.stop()

    asyncio.run(main())


def test_adapters_above_the_rank_limit_or_without_weights_are_refused(tiny_model, adapters, tmp_path):
    import torch

    dims = {m: (64, 64) for m in ("q_proj", "k_proj", "v_proj", "o_proj")}
    with pytest.raises(LoraError, match="rank 8"):
        read_adapter("b", str(adapters["b"]), dims, 2, 4, torch.float32, torch.device("cpu"))
    with pytest.raises(LoraError, match="not a readable peft LoRA folder"):
        read_adapter("x", str(tmp_path), dims, 2, 0, torch.float32, torch.device("cpu"))


def test_an_adapter_of_the_wrong_shape_is_refused_and_lora_keeps_working(tiny_model, adapters, tmp_path):
    """Issue 22 finding 2: shapes checked against the model before use; a refused adapter breaks nothing."""
    from tests.lora_adapters import make_wrong_shape_adapter

    bad = make_wrong_shape_adapter(adapters["a"], tmp_path / "bad")

    async def main() -> None:
        eng = engine(tiny_model, {"a": adapters["a"]})
        await eng.start()
        try:
            before, _ = await run(eng, greedy("r0", [5, 6, 7], "a"))
            with pytest.raises(EngineError, match="down_proj") as e:
                await eng.load_lora("bad", str(bad))
            assert e.value.code.value == "bad_request"
            assert eng.lora_names() == ["a"]
            await eng.load_lora("b", str(adapters["b"]))  # later loads and unloads still work
            after, _ = await run(eng, greedy("r1", [5, 6, 7], "a"))
            assert after == before
            await eng.unload_lora("b")
            await eng.unload_lora("a")
            await eng.load_lora("a", str(adapters["a"]))
            assert (await run(eng, greedy("r2", [5, 6, 7], "a")))[0] == before
        finally:
            await eng.stop()

    asyncio.run(main())


def test_the_kv_router_and_the_block_pool_agree_adapters_never_share_blocks():
    from protocol.kv_events import KvEventBatch
    from shared.kv.block_pool import BlockPool
    from shared.routing.kv_router import KvRouter

    events: list = []
    pool = BlockPool(64, 16, events.extend)
    prompt = list(range(1, 70))
    table = pool.allocate(prompt, root=lora_root("a"))
    pool.commit(table, prompt)
    router = KvRouter(page_size=16, seed=0)
    for w in ("w1", "w2"):
        router.add_instance(w)
    router.apply_batch(KvEventBatch(worker_id="w1", seq=1, events=events))
    assert router.choose("r1", prompt, ["w1", "w2"], lora="a").overlap_blocks == 4
    assert router.choose("r2", prompt, ["w1", "w2"], lora="b").overlap_blocks == 0
    assert router.choose("r3", prompt, ["w1", "w2"]).overlap_blocks == 0
    assert pool.allocate(prompt, root=lora_root("b")).num_cached_tokens == 0
    assert pool.allocate(prompt, root=lora_root("a")).num_cached_tokens == 64
