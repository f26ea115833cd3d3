"""Where a JSON object or string ends, in text that is still arriving (strings may hold any marker)."""

from __future__ import annotations

import re

_IN_STR = re.compile(r'[^"\\]*')
_OUTSIDE = re.compile(r'[^"{}\[\]]*')
_PAIR = {"}": "{", "]": "["}


class JsonSpan:
    """Scans the JSON value that starts at `start` (its first character is `{`, `[` or `"`) as the text grows;
    `end` is set once it is complete, `bad` when its brackets do not match."""

    def __init__(self, start: int) -> None:
        self.start = self.pos = start
        self.stack: list[str] = []
        self.in_str = False
        self.end: int | None = None
        self.bad = False

    def advance(self, text: str) -> int | None:
        """Read on through `text` (the same text as before, grown): the end (exclusive) once complete."""
        pos, n = self.pos, len(text)
        while self.end is None and not self.bad and pos < n:
            if self.in_str:
                pos = _IN_STR.match(text, pos).end()  # type: ignore[union-attr]
                if pos >= n:
                    break
                if text[pos] == "\\":
                    if pos + 1 >= n:
                        break
                    pos += 2
                    continue
                pos += 1
                self.in_str = False
                if not self.stack:
                    self.end = pos
                continue
            pos = _OUTSIDE.match(text, pos).end()  # type: ignore[union-attr]
            if pos >= n:
                break
            c = text[pos]
            pos += 1
            if c == '"':
                self.in_str = True
            elif c in "{[":
                self.stack.append(c)
            elif not self.stack or self.stack.pop() != _PAIR[c]:
                self.bad = True
            elif not self.stack:
                self.end = pos
        self.pos = pos
        return self.end

    def closing(self, text: str) -> str:
        """What would close the value cut short at the end of `text` (a dangling escape is completed)."""
        tail = ""
        if self.in_str:
            tail = ('\\"' if text.endswith("\\") and self.pos < len(text) else '"')
        return tail + "".join("}" if c == "{" else "]" for c in reversed(self.stack))
