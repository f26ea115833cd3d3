"""The reference engine against plain transformers on a tiny random Llama (float32, CPU)."""

from __future__ import annotations

import asyncio
import contextlib
import random
from pathlib import Path

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel, LlamaForCausalLM

from protocol.kv_events import BlockRemoved, BlockStored
from protocol.messages import EngineRequest, OutputChunk, OutputOptions, SamplingOptions, StopConditions
from shared.engine.base import EngineError
from shared.engine.reference import ReferenceConfig, ReferenceEngine, UnsupportedModelError
from tests.llama import make_llama


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_llama(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="module")
def hf_model(model_dir: Path) -> LlamaForCausalLM:
    return LlamaForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()


def hf_greedy(model: LlamaForCausalLM, prompt: list[int], n: int) -> list[int]:
    out = model.generate(torch.tensor([prompt]), attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
                         do_sample=False, max_new_tokens=n, pad_token_id=0)
    return out[0, len(prompt):].tolist()


async def started(model_dir: Path, **kw: object) -> ReferenceEngine:
    kw.setdefault("num_blocks", 1024)
    eng = ReferenceEngine(ReferenceConfig(model_path=str(model_dir), **kw))
    await eng.start()
    return eng


def greedy(rid: str, prompt: list[int], n: int = 24, **kw: object) -> EngineRequest:
    return EngineRequest(request_id=rid, token_ids=prompt, sampling=SamplingOptions(temperature=0.0),
                         stop=StopConditions(max_tokens=n), **kw)


async def collect(eng: ReferenceEngine, req: EngineRequest) -> tuple[list[int], list[OutputChunk]]:
    chunks = [c async for c in eng.generate(req)]
    return [t for c in chunks for t in c.token_ids], chunks


def prompts(count: int, seed: int = 0) -> list[list[int]]:
    rng = random.Random(seed)
    return [[rng.randrange(3, 300) for _ in range(rng.randrange(3, 120))] for _ in range(count)]


async def test_single_request_matches_transformers(model_dir: Path, hf_model: LlamaForCausalLM) -> None:
    eng = await started(model_dir)
    prompt = prompts(1, seed=1)[0]
    tokens, chunks = await collect(eng, greedy("a", prompt, 32))
    assert tokens == hf_greedy(hf_model, prompt, 32)
    last = chunks[-1]
    assert last.finish_reason in ("stop", "length") and last.usage.completion_tokens == len(tokens)
    await eng.stop()


async def test_concurrent_mixed_lengths_match_transformers(model_dir: Path, hf_model: LlamaForCausalLM) -> None:
    eng = await started(model_dir, page_size=8, max_batched_tokens=96, max_running=12)
    ps = prompts(16, seed=2)
    results = await asyncio.gather(*(collect(eng, greedy(str(i), p, 24)) for i, p in enumerate(ps)))
    for p, (tokens, _) in zip(ps, results, strict=True):
        assert tokens == hf_greedy(hf_model, p, 24)
    assert eng.load().kv_used_blocks == 0
    await eng.stop()


async def test_prefix_reuse_is_reported_and_identical(model_dir: Path, hf_model: LlamaForCausalLM) -> None:
    eng = await started(model_dir, page_size=4)
    shared = [(i * 37) % 290 + 3 for i in range(40)]
    await collect(eng, greedy("a", [*shared, 7, 8, 9], 8))
    second = [*shared, 11, 12]
    tokens, chunks = await collect(eng, greedy("b", second, 24))
    assert chunks[-1].usage.cached_tokens == 40
    assert tokens == hf_greedy(hf_model, second, 24)
    await eng.stop()


async def test_preemption_by_recompute_keeps_outputs(model_dir: Path, hf_model: LlamaForCausalLM) -> None:
    eng = await started(model_dir, page_size=4, num_blocks=40)
    ps = [p[:30] for p in prompts(6, seed=4) if len(p) >= 30][:4]
    results = await asyncio.gather(*(collect(eng, greedy(str(i), p, 40)) for i, p in enumerate(ps)))
    for p, (tokens, _) in zip(ps, results, strict=True):
        assert tokens == hf_greedy(hf_model, p, 40)
    assert eng.scheduler.num_preemptions > 0
    await eng.stop()


async def test_kv_events_store_and_evict(model_dir: Path) -> None:
    events: list = []
    eng = await started(model_dir, page_size=4, num_blocks=12)
    eng.set_kv_event_sink(events.extend)
    for i, p in enumerate(prompts(4, seed=5)):
        await collect(eng, greedy(str(i), (p * 3)[:20], 4))
    assert any(isinstance(e, BlockStored) for e in events)
    assert any(isinstance(e, BlockRemoved) for e in events)
    assert eng.runtime_config().total_kv_blocks == 12
    await eng.stop()


async def test_abort_frees_blocks(model_dir: Path) -> None:
    eng = await started(model_dir, page_size=4)
    gen = eng.generate(greedy("a", list(range(3, 40)), 400))
    async with contextlib.aclosing(gen):
        await anext(gen)
        assert eng.load().running == 1 and eng.load().kv_used_blocks > 0
    for _ in range(100):  # blocks a running step writes into come back when it ends
        if eng.load().kv_used_blocks == 0:
            break
        await asyncio.sleep(0.01)
    assert eng.load().running == 0 and eng.load().kv_used_blocks == 0
    assert all(eng.pool.ref_count(b) == 0 for b in range(eng.pool.num_blocks))
    await eng.stop()


async def test_seeded_sampling_is_reproducible(model_dir: Path) -> None:
    eng = await started(model_dir)

    def req(rid: str, seed: int) -> EngineRequest:
        stop = StopConditions(max_tokens=24, ignore_eos=True)
        return EngineRequest(request_id=rid, token_ids=[5, 6, 7, 8], stop=stop,
                             sampling=SamplingOptions(temperature=1.5, top_p=0.95, top_k=50, min_p=0.01, seed=seed))

    (a, _), (b, _), (c, _) = await asyncio.gather(collect(eng, req("a", 1)), collect(eng, req("b", 1)),
                                                  collect(eng, req("c", 2)))
    assert a == b and a != c and len(a) == 24
    await eng.stop()


async def test_logprobs_match_transformers(model_dir: Path, hf_model: LlamaForCausalLM) -> None:
    eng = await started(model_dir)
    prompt = prompts(1, seed=6)[0]
    _, chunks = await collect(eng, greedy("a", prompt, 12, output=OutputOptions(logprobs=3)))
    lps = [x for c in chunks for x in (c.logprobs or [])]
    tops = [x for c in chunks for x in (c.top_logprobs or [])]
    out = hf_model.generate(torch.tensor([prompt]), do_sample=False, max_new_tokens=12, pad_token_id=0,
                            return_dict_in_generate=True, output_logits=True)
    for i, logits in enumerate(out.logits[: len(lps)]):
        ref = torch.log_softmax(logits[0].float(), dim=-1)
        token = int(out.sequences[0, len(prompt) + i])
        assert abs(lps[i] - float(ref[token])) < 1e-4
        assert [t.token_id for t in tops[i]] == ref.topk(3).indices.tolist()
        assert tops[i][0].logprob == pytest.approx(float(ref.max()), abs=1e-4)
    await eng.stop()


async def test_stop_ids_eos_and_min_tokens(model_dir: Path, hf_model: LlamaForCausalLM) -> None:
    eng = await started(model_dir)
    prompt = [9, 8, 7, 6, 5]
    ref = hf_greedy(hf_model, prompt, 8)
    stop_at = ref[2]
    req = greedy("a", prompt, 8).__class__(request_id="a", token_ids=prompt,
                                           sampling=SamplingOptions(temperature=0.0),
                                           stop=StopConditions(max_tokens=8, stop_token_ids=[stop_at]))
    tokens, chunks = await collect(eng, req)
    assert tokens == ref[: ref.index(stop_at) + 1]
    assert chunks[-1].finish_reason == "stop" and chunks[-1].stop_reason == stop_at
    late = EngineRequest(request_id="b", token_ids=prompt, sampling=SamplingOptions(temperature=0.0),
                         stop=StopConditions(max_tokens=8, min_tokens=8, stop_token_ids=[stop_at]))
    tokens, chunks = await collect(eng, late)
    assert len(tokens) == 8 and stop_at not in tokens and chunks[-1].finish_reason == "length"
    await eng.stop()


async def test_prefill_handoff_then_import_decodes_identically(model_dir: Path, hf_model: LlamaForCausalLM) -> None:
    prefill, decode = await started(model_dir, page_size=4), await started(model_dir, page_size=4)
    prompt = prompts(1, seed=7)[0][:37]
    hand = await prefill.prefill(greedy("a", prompt, 16))
    assert prefill.load().kv_used_blocks == len(hand.block_ids) == 10
    imported = decode.import_kv("a", prompt, hand.first_token, hand.first_logprob)
    for src, dst in zip(prefill.kv_tensors(), decode.kv_tensors(), strict=True):
        dst[imported.block_ids] = src[hand.block_ids]
    await prefill.release("a")
    assert prefill.load().kv_used_blocks == 0
    tokens, _ = await collect(decode, greedy("a", prompt, 16))
    assert tokens == hf_greedy(hf_model, prompt, 16)
    assert decode.bytes_per_block == prefill.kv_tensors()[0][0].nbytes
    await prefill.stop()
    await decode.stop()


async def test_refuses_too_long_and_unsupported(model_dir: Path, tmp_path: Path) -> None:
    eng = await started(model_dir)
    assert eng.context_length() == 512
    with pytest.raises(EngineError) as err:
        await collect(eng, greedy("a", list(range(3, 500)), 64))
    assert err.value.code == "context_length_exceeded"
    await eng.stop()
    GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=64)).save_pretrained(tmp_path)
    with pytest.raises(UnsupportedModelError, match="llama"):
        await started(tmp_path)
