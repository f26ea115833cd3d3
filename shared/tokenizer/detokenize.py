"""Incremental detokenization and stop strings.

Byte-level tokens can split one UTF-8 character over several tokens, so new
text is emitted only once the window it came from decodes without a trailing
replacement character. Each call decodes a short window, not the whole text.
"""

from __future__ import annotations

from shared.tokenizer.tokenizer import Tokenizer

_REPLACEMENT = "\ufffd"


class IncrementalDetokenizer:
    """Text deltas from token ids; the deltas concatenate to `decode(all ids)`."""

    def __init__(self, tokenizer: Tokenizer, skip_special_tokens: bool = True) -> None:
        self.tok = tokenizer
        self.skip = skip_special_tokens
        self.ids: list[int] = []
        self._prefix = 0  # window start: tokens already emitted, decoded again for context
        self._read = 0  # window split: tokens before it are emitted

    def add(self, token_ids: list[int]) -> str:
        """New final text after appending `token_ids` ('' while a character is incomplete)."""
        self.ids.extend(token_ids)
        before = self.tok.decode(self.ids[self._prefix : self._read], self.skip)
        after = self.tok.decode(self.ids[self._prefix :], self.skip)
        if len(after) <= len(before) or after.endswith(_REPLACEMENT):
            return ""
        self._prefix, self._read = self._read, len(self.ids)
        return after[len(before) :]

    def flush(self) -> str:
        """Whatever is still held back (an incomplete character decodes as U+FFFD)."""
        before = self.tok.decode(self.ids[self._prefix : self._read], self.skip)
        after = self.tok.decode(self.ids[self._prefix :], self.skip)
        self._prefix = self._read = len(self.ids)
        return after[len(before) :] if len(after) > len(before) else ""


class StopStringMatcher:
    """Holds back text that could still become a stop string; cuts at the first match."""

    def __init__(self, stops: list[str]) -> None:
        self.stops = [s for s in stops if s]
        self._hold = max((len(s) for s in self.stops), default=1) - 1
        self._buf = ""
        self.stopped: str | None = None

    def feed(self, text: str) -> tuple[str, bool]:
        """(text safe to emit now, whether a stop string matched)."""
        if self.stopped is not None:
            return "", True
        self._buf += text
        cut = min(((i, s) for s in self.stops if (i := self._buf.find(s)) >= 0), default=None)
        if cut is not None:
            self.stopped = cut[1]
            out, self._buf = self._buf[: cut[0]], ""
            return out, True
        keep = self._partial_len()
        out = self._buf[: len(self._buf) - keep]
        self._buf = self._buf[len(self._buf) - keep :]
        return out, False

    def flush(self) -> str:
        out, self._buf = self._buf, ""
        return out

    def _partial_len(self) -> int:
        """Length of the longest tail of the buffer that is a proper prefix of some stop string."""
        buf = self._buf
        for n in range(min(self._hold, len(buf)), 0, -1):
            tail = buf[-n:]
            if any(s.startswith(tail) for s in self.stops):
                return n
        return 0
