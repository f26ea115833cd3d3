"""Incremental detokenization: text deltas from a stream of token ids.

Byte-level tokens can split one UTF-8 character over several tokens, so text
is emitted only once it is final: decoded without a trailing replacement
character, or cut where the bytes after it decode on their own (so they
already settled how the text before them ends). Each
call decodes a short window (a few tokens of left context plus the new ones),
never the whole text; the context keeps decoders that strip a leading space
at the start of a sequence (SentencePiece) from dropping real spaces.
"""

from __future__ import annotations

from collections.abc import Sequence

from shared.tokenizer.tokenizer import Tokenizer

REPLACEMENT = "\ufffd"
PROMPT_CONTEXT = 5  # prompt tokens decoded as left context for the first delta
LOOKBACK = 4  # an incomplete UTF-8 character spans at most 3 tokens: look that far back for a clean cut


class IncrementalDetokenizer:
    """Deltas concatenate (with `flush()`) to `tokenizer.decode(all added ids)`, never splitting a character."""

    def __init__(self, tokenizer: Tokenizer, prompt_ids: Sequence[int] | None = None,
                 skip_special_tokens: bool = True) -> None:
        self.tok = tokenizer
        self.skip = skip_special_tokens
        self._ids: list[int] = list(prompt_ids[-PROMPT_CONTEXT:]) if prompt_ids else []
        self._prefix = 0  # window start: emitted tokens decoded again as context
        self._read = len(self._ids)  # tokens before this are emitted
        self._prefix_text = self._decode(self._prefix, self._read)
        if self._prefix_text.endswith(REPLACEMENT):  # the prompt ends mid-character: no context
            self._ids, self._read, self._prefix_text = [], 0, ""

    def add(self, token_ids: Sequence[int]) -> str:
        """The new final text after appending `token_ids` ('' while a character is incomplete)."""
        self._ids.extend(token_ids)
        end = len(self._ids)
        full = self._decode(self._prefix, end)
        if full.startswith(self._prefix_text) and not full.endswith(REPLACEMENT):
            return self._advance(full, end)
        for cut in range(end - 1, max(self._read, end - LOOKBACK - 1), -1):
            text = self._decode(self._prefix, cut)
            if text.startswith(self._prefix_text) and self._splits_cleanly(text, cut, full):
                return self._advance(text, cut)
        return ""

    def flush(self) -> str:
        """Everything still held back (an incomplete character ends as U+FFFD)."""
        full = self._decode(self._prefix, len(self._ids))
        if not full.startswith(self._prefix_text):
            return ""
        return self._advance(full, len(self._ids))

    def _advance(self, text: str, cut: int) -> str:
        delta = text[len(self._prefix_text) :]
        self._prefix, self._read = self._read, cut
        self._prefix_text = self._decode(self._prefix, self._read)
        return delta

    def _decode(self, start: int, stop: int) -> str:
        return self.tok.decode(self._ids[start:stop], self.skip) if stop > start else ""

    def _splits_cleanly(self, head: str, cut: int, full: str) -> bool:
        """Whether no character (valid, or one invalid byte run) straddles `cut`: then `head` is final,
        since the bytes after `cut` already decided how the last character of `head` ends."""
        tail = self._decode(cut, len(self._ids))
        return bool(tail) and head + tail == full
