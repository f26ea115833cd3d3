"""Tokenizer, chat template, incremental detokenizer and stop strings."""

from shared.tokenizer.detokenize import IncrementalDetokenizer, StopStringMatcher
from shared.tokenizer.tokenizer import TemplateError, Tokenizer

__all__ = ["IncrementalDetokenizer", "StopStringMatcher", "TemplateError", "Tokenizer"]
