"""What parsing an output yields, and the driver: reasoning first, then tool calls in what remains as content."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field


@dataclass(frozen=True)
class CallDelta:
    """A piece of one tool call: `name` on the first delta of an index only; `arguments` a fragment of the
    arguments JSON text (the fragments of one index concatenate to the final arguments string)."""

    index: int
    name: str | None
    arguments: str


@dataclass(frozen=True)
class ToolCall:
    name: str
    arguments: str  # a JSON object, as text


@dataclass(slots=True)
class Parsed:
    """What a piece of output adds: plain content, reasoning, and tool-call deltas in order."""

    content: str = ""
    reasoning: str = ""
    calls: list[CallDelta] = field(default_factory=list)

    def add(self, other: Parsed) -> None:
        self.content += other.content
        self.reasoning += other.reasoning
        self.calls += other.calls


def join_calls(deltas: Iterable[CallDelta]) -> list[ToolCall]:
    """Whole calls from their deltas (a whole response), in index order."""
    names: dict[int, str] = {}
    args: dict[int, list[str]] = {}
    for d in deltas:
        if d.name is not None:
            names[d.index] = d.name
        args.setdefault(d.index, []).append(d.arguments)
    return [ToolCall(names.get(i, ""), "".join(args[i])) for i in sorted(args)]


class Malformed(Exception):
    """A tool-call region that is not a valid call (nothing of it was sent): its `length` characters end as
    content; `cut`: it could still have been a call but the output ended first (its markup is dropped)."""

    def __init__(self, length: int, cut: bool = False) -> None:
        super().__init__(length)
        self.length, self.cut = length, cut


@dataclass
class Call:
    """One call of a region as far as it is known: `arguments` only grows while more text arrives."""

    name: str
    arguments: str


@dataclass
class Scan:
    """A region as far as it is known: its calls, and how many characters it used once complete (else None)."""

    calls: list[Call]
    used: int | None


class ToolFormat:
    """One family's tool-call syntax. A format may keep state about the region being read (`reset` clears it
    when a new region begins); `scan` sees the whole region so far each time and must answer the same for
    the same text, however it arrived."""

    starts: tuple[str, ...] = ()
    at_start_only: tuple[str, ...] = ()  # markers that open a region only at the start of the output

    def reset(self) -> None:
        """A new region begins."""

    def quiet(self, text: str) -> bool:
        """Whether appending `text` to the open region cannot change what `scan` says (formats may say so)."""
        return False

    def scan(self, region: str, final: bool) -> Scan:
        """The calls of the region at the front of `region` (it begins with a start marker). Malformed when it
        cannot be a call (only while no call of it was committed); with `final`, `used` is never None."""
        raise NotImplementedError
