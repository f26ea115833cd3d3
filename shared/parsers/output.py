"""The incremental drivers: reasoning first, then tool calls in what remains as content."""

from __future__ import annotations

from dataclasses import dataclass, field

from shared.parsers.scan import find_first, partial_suffix


@dataclass(frozen=True)
class ToolCall:
    name: str
    arguments: str  # a JSON object, as text


@dataclass
class Parsed:
    """What a piece of output adds: plain content, reasoning, and whole tool calls in order."""

    content: str = ""
    reasoning: str = ""
    calls: list[ToolCall] = field(default_factory=list)

    def add(self, other: Parsed) -> None:
        self.content += other.content
        self.reasoning += other.reasoning
        self.calls += other.calls


class Malformed(Exception):
    """A complete tool-call region that is not a valid call: its `length` characters end as content."""

    def __init__(self, length: int) -> None:
        super().__init__(length)
        self.length = length


class ToolFormat:
    """One model family's tool-call syntax. Subclasses set `starts` and implement `take`."""

    starts: tuple[str, ...] = ()
    at_start_only: tuple[str, ...] = ()  # markers that open a region only at the start of the output

    def take(self, region: str, final: bool) -> tuple[list[ToolCall], int] | None:
        """Parse the region at the front of `region` (it begins with a start marker): the calls and how many
        characters they used; None while more text is needed; Malformed when complete but invalid."""
        raise NotImplementedError


class ToolCallParser:
    """Content with tool-call regions -> content and calls. Whitespace right before a call, and at the end of
    an output with calls, is dropped (it only separates calls)."""

    def __init__(self, fmt: ToolFormat) -> None:
        self.fmt = fmt
        self.buf = ""
        self.started = False  # any output seen (at_start_only markers count only before)
        self.in_region = False  # buf begins with a region that is not complete yet
        self.gap = ""  # whitespace before the open region: dropped if it holds calls, content if not
        self.any_call = False

    def feed(self, text: str, final: bool = False) -> Parsed:
        self.buf += text
        out = Parsed()
        while self.buf:
            if not self.in_region:
                region = self._region_start()
                if region is None:
                    self._emit_safe(out, final)
                    break
                before = self.buf[:region]
                out.content += before.rstrip()
                self.gap = before[len(before.rstrip()) :]
                self.buf, self.started, self.in_region = self.buf[region:], True, True
            try:
                got = self.fmt.take(self.buf, final)
            except Malformed as e:
                out.content += self.gap + self.buf[: e.length]
                self.buf, self.gap, self.in_region = self.buf[e.length :], "", False
                continue
            if got is None:
                if final:  # cut short inside a call: the rest ends as text
                    out.content += self.gap + self.buf
                    self.buf, self.gap = "", ""
                break
            calls, used = got
            out.calls += calls
            self.any_call = self.any_call or bool(calls)
            self.buf, self.gap, self.in_region = self.buf[used:], "", False
        return out

    def _region_start(self) -> int | None:
        if not self.started and self.fmt.at_start_only:
            stripped = self.buf.lstrip()
            lead = len(self.buf) - len(stripped)
            if any(stripped.startswith(m) for m in self.fmt.at_start_only):
                return lead
        hit = find_first(self.buf, self.fmt.starts)
        return None if hit is None else hit[0]

    def _emit_safe(self, out: Parsed, final: bool) -> None:
        """Emit what cannot become a marker; hold the rest (and trailing whitespace) until more comes."""
        if final:
            out.content += self.buf.rstrip() if self.any_call else self.buf
            self.buf = ""
            return
        if not self.started and self.fmt.at_start_only:
            stripped = self.buf.lstrip()
            if not stripped or any(m.startswith(stripped) for m in self.fmt.at_start_only):
                return  # may still open a region at the start
        keep = partial_suffix(self.buf, self.fmt.starts)
        cut = len(self.buf) - keep
        cut = len(self.buf[:cut].rstrip())
        if cut:
            out.content += self.buf[:cut]
            self.buf, self.started = self.buf[cut:], True


class ReasoningFormat:
    """`start` ... `end` around the reasoning; `forced`: the output begins inside it (the prompt opened it)."""

    def __init__(self, start: str, end: str, forced: bool = False) -> None:
        self.start, self.end, self.forced = start, end, forced


class ReasoningParser:
    """Output -> reasoning and the content after it. Reasoning opens only at the start of the output."""

    def __init__(self, fmt: ReasoningFormat) -> None:
        self.fmt = fmt
        self.buf = ""
        self.state = "in" if fmt.forced else "before"  # before -> in -> after_end -> after
        self.opened = False  # the opening tag is behind us (or cannot come any more)

    def feed(self, text: str, final: bool = False) -> Parsed:
        self.buf += text
        out = Parsed()
        if self.state == "before":
            stripped = self.buf.lstrip()
            if stripped.startswith(self.fmt.start):
                self.buf, self.state, self.opened = stripped[len(self.fmt.start) :], "in", True
            elif self.fmt.start.startswith(stripped) and not final:
                return out
            else:
                self.state = "after"
        if self.state == "in" and not self.opened:  # a forced start may still repeat the opening tag
            stripped = self.buf.lstrip()
            if stripped.startswith(self.fmt.start):
                self.buf = stripped[len(self.fmt.start) :]
            elif not final and self.fmt.start.startswith(stripped):
                return out
            self.opened = True
        if self.state == "in":
            i = self.buf.find(self.fmt.end)
            if i < 0:
                keep = 0 if final else partial_suffix(self.buf, [self.fmt.end])
                out.reasoning += self.buf[: len(self.buf) - keep]
                self.buf = self.buf[len(self.buf) - keep :]
                return out
            out.reasoning += self.buf[:i]
            self.buf, self.state = self.buf[i + len(self.fmt.end) :], "after_end"
        if self.state == "after_end":  # whitespace between the reasoning and the answer is dropped
            self.buf = self.buf.lstrip()
            if not self.buf and not final:
                return out
            self.state = "after"
        out.content += self.buf
        self.buf = ""
        return out


class OutputParser:
    """Reasoning (if a format is given), then tool calls (if a format is given) in the content."""

    def __init__(self, tools: ToolFormat | None = None, reasoning: ReasoningFormat | None = None) -> None:
        self.reasoning = ReasoningParser(reasoning) if reasoning else None
        self.tools = ToolCallParser(tools) if tools else None

    def feed(self, text: str) -> Parsed:
        return self._run(text, final=False)

    def finish(self) -> Parsed:
        return self._run("", final=True)

    def parse(self, text: str) -> Parsed:
        """A whole output at once."""
        out = self.feed(text)
        out.add(self.finish())
        return out

    def _run(self, text: str, final: bool) -> Parsed:
        out = Parsed(content=text)
        if self.reasoning is not None:
            out = self.reasoning.feed(text, final)
        if self.tools is not None:
            tooled = self.tools.feed(out.content, final)
            out.content, out.calls = tooled.content, tooled.calls
        return out
