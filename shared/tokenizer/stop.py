"""Stop strings over streamed text: cut at the first match, hold back what could still become one."""

from __future__ import annotations


class StopStringMatcher:
    """Text in, text safe to emit out; the stop string itself is never emitted (as OpenAI does)."""

    def __init__(self, stops: list[str]) -> None:
        self.stops = [s for s in dict.fromkeys(stops) if s]
        self._longest = max((len(s) for s in self.stops), default=0)
        self._buf = ""
        self.stopped: str | None = None  # the stop string that matched

    def feed(self, text: str) -> tuple[str, bool]:
        """(text safe to emit now, whether a stop string has matched)."""
        if self.stopped is not None:
            return "", True
        self._buf += text
        match = self._first_match()
        if match is not None:
            at, self.stopped = match
            out, self._buf = self._buf[:at], ""
            return out, True
        keep = self._partial_len()
        out, self._buf = self._buf[: len(self._buf) - keep], self._buf[len(self._buf) - keep :]
        return out, False

    def flush(self) -> str:
        """Held-back text, when the stream ends without a stop."""
        out, self._buf = self._buf, ""
        return out

    def _first_match(self) -> tuple[int, str] | None:
        """The stop that completes first (then the longest), so chunking never changes the result."""
        found = [(at + len(s), at, s) for s in self.stops if (at := self._buf.find(s)) >= 0]
        if not found:
            return None
        _, at, stop = min(found)
        return at, stop

    def _partial_len(self) -> int:
        """Length of the longest tail of the buffer that is a proper prefix of a stop string."""
        buf = self._buf
        for n in range(min(self._longest - 1, len(buf)), 0, -1):
            tail = buf[-n:]
            if any(s.startswith(tail) for s in self.stops):
                return n
        return 0
