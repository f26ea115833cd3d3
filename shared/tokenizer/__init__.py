"""Tokenizer, chat template, incremental detokenizer and stop strings."""

from shared.tokenizer.chat import TemplateError
from shared.tokenizer.detokenize import IncrementalDetokenizer
from shared.tokenizer.stop import StopStringMatcher
from shared.tokenizer.tokenizer import Tokenizer

__all__ = ["IncrementalDetokenizer", "StopStringMatcher", "TemplateError", "Tokenizer"]
