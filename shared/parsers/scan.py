"""Finding markers in text that is still arriving."""

from __future__ import annotations

from collections.abc import Sequence


def find_first(text: str, markers: Sequence[str], start: int = 0) -> tuple[int, str] | None:
    """The earliest (position, marker) of any of `markers` in `text` (the longest marker on a tie)."""
    best: tuple[int, str] | None = None
    for m in markers:
        i = text.find(m, start)
        if i >= 0 and (best is None or i < best[0] or (i == best[0] and len(m) > len(best[1]))):
            best = (i, m)
    return best


def partial_suffix(text: str, markers: Sequence[str]) -> int:
    """Length of the longest end of `text` that is a proper beginning of a marker (it may become one)."""
    longest, n = 0, len(text)
    for m in markers:
        i = text.find(m[0], max(0, n - len(m) + 1))
        while i >= 0:
            if n - i > longest and m.startswith(text[i:]):
                longest = n - i
                break
            i = text.find(m[0], i + 1)
    return longest
