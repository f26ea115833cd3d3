"""Prompt logprobs asked of SGLang (`return_logprob`, `logprob_start_len=0`) through the adapter, on a fake
`sglang.Engine` that answers `input_token_logprobs` / `input_top_logprobs` as SGLang does."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from protocol.messages import EngineRequest, OutputOptions, StopConditions, TopLogprob
from shared.engine.sglang.mapping import generate_kwargs
from tests.unit.test_sglang_engine import FakeSgl, _collect, _engine


class ScoringSgl(FakeSgl):
    """Answers the prompt's logprobs on every item once asked with logprob_start_len 0 (as SGLang's meta_info)."""

    async def _stream(self, kw: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        prompt = kw["input_ids"]
        max_new = kw["sampling_params"]["max_new_tokens"]
        asked = kw.get("return_logprob") and kw.get("logprob_start_len") == 0
        k = kw.get("top_logprobs_num", 0)
        meta_lp: dict[str, Any] = {}
        if asked:
            meta_lp["input_token_logprobs"] = [(None if i == 0 else -0.5 * i, t, "x") for i, t in enumerate(prompt)]
            meta_lp["input_top_logprobs"] = [None if i == 0 else [(-0.1 * j, 100 + j, "y") for j in range(k)]
                                             for i in range(len(prompt))]
        ids: list[int] = []
        outputs = self.outputs[:max_new]
        if not outputs:  # max_new_tokens 0: one finished item, no output
            yield {"output_ids": [], "meta_info": {"finish_reason": {"type": "length", "length": 0},
                                                   "prompt_tokens": len(prompt), "completion_tokens": 0, **meta_lp}}
            return
        for i, tok in enumerate(outputs):
            ids.append(tok)
            done = i == len(outputs) - 1
            yield {"output_ids": ids, "meta_info": {"finish_reason": {"type": "length"} if done else None,
                                                    "prompt_tokens": len(prompt), "completion_tokens": len(ids),
                                                    **meta_lp}}


def _asking(k: int | None, max_tokens: int, logprobs: int | None = None) -> EngineRequest:
    return EngineRequest(request_id="r", token_ids=[11, 12, 13], stop=StopConditions(max_tokens=max_tokens),
                         output=OutputOptions(logprobs=logprobs, prompt_logprobs=k))


def test_generate_kwargs_ask_for_prompt_logprobs_only_when_asked() -> None:
    kw = generate_kwargs(_asking(2, 1))
    assert kw["return_logprob"] is True and kw["logprob_start_len"] == 0 and kw["top_logprobs_num"] == 2
    kw = generate_kwargs(_asking(0, 1, logprobs=3))
    assert kw["logprob_start_len"] == 0 and kw["top_logprobs_num"] == 3  # the larger of the two asks
    plain = generate_kwargs(_asking(None, 1))
    assert "logprob_start_len" not in plain and "return_logprob" not in plain


async def test_first_chunk_carries_the_prompt_logprobs_once() -> None:
    sgl = ScoringSgl([7, 8, 9])
    chunks = await _collect(_engine(sgl), _asking(2, 3, logprobs=2))
    assert [c.token_ids for c in chunks] == [[7], [8], [9]]
    assert chunks[0].prompt_logprobs == [None, -0.5, -1.0]
    assert chunks[0].prompt_top_logprobs == [[], [TopLogprob(100, 0.0), TopLogprob(101, -0.1)],
                                             [TopLogprob(100, 0.0), TopLogprob(101, -0.1)]]
    assert all(c.prompt_logprobs is None and c.prompt_top_logprobs is None for c in chunks[1:])
    assert sgl.calls[0]["logprob_start_len"] == 0


async def test_max_tokens_zero_answers_the_prompt_only() -> None:
    sgl = ScoringSgl([7, 8, 9])
    chunks = await _collect(_engine(sgl), _asking(0, 0))
    assert len(chunks) == 1 and chunks[0].token_ids == [] and chunks[0].finish_reason == "length"
    assert chunks[0].prompt_logprobs == [None, -0.5, -1.0] and chunks[0].prompt_top_logprobs is None
    assert sgl.calls[0]["sampling_params"]["max_new_tokens"] == 0


async def test_not_asked_sends_none() -> None:
    chunks = await _collect(_engine(ScoringSgl([7])), _asking(None, 1))
    assert chunks[0].prompt_logprobs is None and chunks[0].token_ids == [7]
