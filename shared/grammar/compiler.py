"""Grammars compiled once per (tokenizer, grammar): an LRU of xgrammar's compiled grammars per tokenizer."""

from __future__ import annotations

import json
import re
import threading
import weakref
from collections import OrderedDict
from collections.abc import Iterable
from typing import TYPE_CHECKING

from protocol.messages import Grammar
from shared.grammar.schema import fix_schema, parse_schema
from shared.tokenizer import Tokenizer

if TYPE_CHECKING:  # imported where used: xgrammar takes seconds to import (torch, tvm-ffi), and only grammars need it
    import xgrammar as xgr

KINDS = ("json_schema", "json_object", "regex", "ebnf", "structural_tag")
CACHE_SIZE = 256  # compiled grammars kept per tokenizer, at most
CACHE_BYTES = 256 * 2**20  # and at most this much memory of them (xgrammar's own estimate)
_compiles = 0  # grammars compiled by this process (benchmarks and tests read it)


class GrammarError(ValueError):
    """The grammar does not compile; the message says why (for a 400)."""


def compile_count() -> int:
    return _compiles


class GrammarCache:
    """Compiles grammars for one tokenizer and keeps the most recent of them, at most `size` grammars and
    `max_bytes` of memory (thread-safe). One grammar bigger than `max_bytes` is compiled but not kept."""

    _by_tokenizer: weakref.WeakKeyDictionary[Tokenizer, dict[int, GrammarCache]] = weakref.WeakKeyDictionary()

    def __init__(self, info: xgr.TokenizerInfo, size: int = CACHE_SIZE, max_bytes: int = CACHE_BYTES) -> None:
        import xgrammar as xgr

        self.info = info
        self.vocab_size = info.vocab_size
        self._compiler = xgr.GrammarCompiler(info, cache_enabled=False)
        self._lru: OrderedDict[Grammar, tuple[xgr.CompiledGrammar, int]] = OrderedDict()
        self._size = size
        self._max_bytes = max_bytes
        self.bytes = 0  # memory held by the cached grammars
        self._lock = threading.Lock()

    @classmethod
    def for_tokenizer(cls, tok: Tokenizer, vocab_size: int | None = None,
                      stop_ids: Iterable[int] | None = None) -> GrammarCache:
        """The cache of `tok` (one per tokenizer object and vocabulary size); `vocab_size` is the model's
        (its logits may be wider than the tokenizer's vocabulary)."""
        size = max(vocab_size or 0, tok.vocab_size)
        caches = cls._by_tokenizer.setdefault(tok, {})
        if size not in caches:
            caches[size] = cls(_tokenizer_info(tok, size, stop_ids))
        return caches[size]

    def compile(self, grammar: Grammar) -> xgr.CompiledGrammar:
        with self._lock:
            hit = self._lru.get(grammar)
            if hit is not None:
                self._lru.move_to_end(grammar)
                return hit[0]
        compiled = self._compile(grammar)  # outside the lock: compiles of different grammars run side by side
        size = _memory(compiled) + len(grammar.spec or "")
        if size > self._max_bytes:
            return compiled
        with self._lock:
            old = self._lru.pop(grammar, None)
            if old is not None:
                self.bytes -= old[1]
            self._lru[grammar] = (compiled, size)
            self.bytes += size
            while len(self._lru) > self._size or self.bytes > self._max_bytes:
                self.bytes -= self._lru.popitem(last=False)[1][1]
        return compiled

    def _compile(self, g: Grammar) -> xgr.CompiledGrammar:
        global _compiles
        if g.kind not in KINDS:
            raise GrammarError(f"unknown grammar kind {g.kind!r} (one of {', '.join(KINDS)})")
        c = self._compiler
        try:
            if g.kind == "json_schema":
                schema = json.dumps(fix_schema(parse_schema(g.spec)), ensure_ascii=False)
                out = c.compile_json_schema(schema, any_whitespace=False, strict_mode=True)
            elif g.kind == "json_object":
                out = c.compile_json_schema('{"type": "object"}', any_whitespace=False)
            elif g.kind == "regex":
                out = c.compile_regex(g.spec)
            elif g.kind == "ebnf":
                out = c.compile_grammar(g.spec)
            else:
                out = c.compile_structural_tag(g.spec)
        except Exception as e:  # xgrammar raises RuntimeError / ValueError with the reason
            raise GrammarError(f"{g.kind} does not compile: {_reason(e)}") from e
        _compiles += 1
        return out


def _memory(compiled: xgr.CompiledGrammar) -> int:
    try:
        return int(compiled.memory_size_bytes)
    except Exception:  # an xgrammar without the estimate: count a generous flat size
        return 2**20


_SOURCE_PREFIX = re.compile(r"^\[[^\]]*\] \S+:\d+: ")  # "[05:13:09] /project/cpp/x.cc:123: "


def _reason(e: Exception) -> str:
    """xgrammar's message without its time and C++ source location."""
    text = _SOURCE_PREFIX.sub("", str(e).strip())
    return text.splitlines()[0] if text else type(e).__name__


def _tokenizer_info(tok: Tokenizer, vocab_size: int, stop_ids: Iterable[int] | None) -> xgr.TokenizerInfo:
    import xgrammar as xgr
    from transformers import PreTrainedTokenizerFast

    hf = PreTrainedTokenizerFast(tokenizer_object=tok.backend)
    stops = sorted(set(stop_ids) if stop_ids is not None else tok.eos_token_ids)
    return xgr.TokenizerInfo.from_huggingface(hf, vocab_size=vocab_size, stop_token_ids=stops or None)
