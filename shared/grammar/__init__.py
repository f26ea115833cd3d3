"""Structured output: one grammar layer on xgrammar, shared by the reference and mock engines and the frontend.

    cache = GrammarCache.for_tokenizer(tok, vocab_size, stop_ids)   # one per (tokenizer, vocabulary)
    compiled = cache.compile(Grammar("json_schema", schema_json))   # GrammarError says why it cannot
    matcher = GrammarMatcher(compiled)                              # one per request
"""

from shared.grammar.compiler import GrammarCache, GrammarError, compile_count
from shared.grammar.mask import TokenMask

__all__ = ["GrammarCache", "GrammarError", "TokenMask", "compile_count"]
