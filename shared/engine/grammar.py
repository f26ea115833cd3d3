"""Engine-side structured output: a request's `Grammar` -> its `TokenMask`, compiled off the event loop.

Shared by the reference and mock engines. A grammar that does not compile fails
its request with `bad_request` (the frontend validated it already; a worker never
crashes on one).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from protocol.messages import EngineRequest, ErrorCode
from shared.engine.base import EngineError
from shared.grammar import GrammarCache, GrammarError, TokenMask
from shared.grammar.pool import run_compile
from shared.tokenizer import Tokenizer


class EngineGrammars:
    """The grammar cache of one model: its tokenizer (loaded at first use), vocabulary and stop ids."""

    def __init__(self, model_path: str | Path, vocab_size: int, stop_ids: Iterable[int]) -> None:
        self.model_path, self.vocab_size, self.stop_ids = model_path, vocab_size, frozenset(stop_ids)
        self._cache: GrammarCache | None = None

    def _load(self) -> GrammarCache:
        if self._cache is None:
            tok = Tokenizer.from_dir(self.model_path)
            self._cache = GrammarCache.for_tokenizer(tok, self.vocab_size, self.stop_ids or None)
        return self._cache

    async def mask_for(self, request: EngineRequest) -> TokenMask | None:
        """The request's matcher, or None when it has no grammar."""
        if request.grammar is None:
            return None
        grammar = request.grammar

        def build() -> TokenMask:
            cache = self._load()
            return TokenMask(cache.compile(grammar), cache.vocab_size)

        try:
            return await run_compile(build)  # the grammar pool, with its deadline
        except GrammarError as e:
            raise EngineError(ErrorCode.BAD_REQUEST, str(e)) from e
        except FileNotFoundError as e:
            raise EngineError(ErrorCode.BAD_REQUEST, f"structured output needs the model's tokenizer: {e}") from e
