"""`suffix` (fill-in-the-middle): a PSM prompt for models whose tokenizer has FIM sentinels, else a 400."""

from __future__ import annotations

from pathlib import Path

import pytest
from tokenizers import Tokenizer as FastTokenizer

from services.frontend.openai_types import CompletionRequest
from services.frontend.preprocess import prepare
from shared.errors import BadRequest
from shared.tokenizer import Tokenizer
from shared.tokenizer.fim import fim_sentinels

FIM = ("<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>")


@pytest.fixture(scope="module")
def plain(tiny_model: Path) -> Tokenizer:
    return Tokenizer.from_dir(tiny_model)


@pytest.fixture(scope="module")
def coder(tiny_model: Path) -> Tokenizer:
    fast = FastTokenizer.from_file(str(tiny_model / "tokenizer.json"))
    fast.add_special_tokens(list(FIM))
    return Tokenizer(fast, {})


async def test_suffix_makes_a_prefix_suffix_middle_prompt(coder: Tokenizer) -> None:
    req = CompletionRequest(model="m", prompt="def f(", suffix="\n    return x")
    p = await prepare(coder, req, "r", 4096)
    pre, suf, mid = (coder.token_to_id(t) for t in FIM)
    assert p.request.token_ids == [pre, *coder.encode("def f("), suf, *coder.encode("\n    return x"), mid]
    assert fim_sentinels(coder) == FIM


async def test_suffix_on_a_model_without_fim_is_a_400(plain: Tokenizer) -> None:
    assert fim_sentinels(plain) is None
    for prompt in ("def f(", [1, 2, 3]):
        with pytest.raises(BadRequest) as e:
            await prepare(plain, CompletionRequest(model="m", prompt=prompt, suffix="x"), "r", 4096)
        assert e.value.param == "suffix"
