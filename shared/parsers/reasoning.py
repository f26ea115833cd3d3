"""Reasoning formats by `--reasoning-parser` name, and the incremental reasoning parser."""

from __future__ import annotations

from dataclasses import dataclass

from shared.parsers.output import Parsed
from shared.parsers.scan import find_first, partial_suffix


@dataclass(frozen=True)
class ReasoningFormat:
    """`start` ... `end` around the reasoning; `forced`: the output always begins inside it (an alias kept for
    old flags: the rendered prompt says so on its own); `harmony`: gpt-oss channels instead of markers."""

    start: str
    end: str
    forced: bool = False
    harmony: bool = False
    also: tuple[tuple[str, str], ...] = ()  # other (opening, closing) pairs the family writes
    interrupts: tuple[str, ...] = ()  # markers that end the reasoning unclosed (they stay, as content)

    @property
    def pairs(self) -> tuple[tuple[str, str], ...]:
        return ((self.start, self.end), *self.also)


_THINK = ("<think>", "</think>")
_FORMATS: dict[str, ReasoningFormat] = {
    "think": ReasoningFormat(*_THINK),
    "qwen3": ReasoningFormat(*_THINK),
    "qwen3-thinking": ReasoningFormat(*_THINK, forced=True),
    "deepseek-r1": ReasoningFormat(*_THINK, forced=True),
    "deepseek-v3": ReasoningFormat(*_THINK),
    "glm45": ReasoningFormat(*_THINK),
    # Kimi K2 thinking may open its tool-call section inside the reasoning, never closing it
    "kimi_k2": ReasoningFormat(*_THINK, interrupts=("<|tool_calls_section_begin|>", "<|tool_call_section_begin|>")),
    "minimax": ReasoningFormat(*_THINK),
    "kimi": ReasoningFormat("◁think▷", "◁/think▷", also=(_THINK,)),
    "mistral": ReasoningFormat("[THINK]", "[/THINK]", also=(_THINK,)),  # Magistral 2506 wrote <think> as text
    "gpt-oss": ReasoningFormat("<|channel|>analysis<|message|>", "<|end|>", harmony=True),
}
REASONING_PARSERS = tuple(_FORMATS)


def reasoning_format(name: str, enabled: bool = True) -> ReasoningFormat | None:
    """The format named `name`; None when reasoning is off for this request. KeyError for an unknown name."""
    if name not in _FORMATS:
        raise KeyError(f"unknown reasoning parser {name!r} (one of {', '.join(REASONING_PARSERS)})")
    return _FORMATS[name] if enabled else None


def prompt_opens_reasoning(prompt: str | None, fmt: ReasoningFormat) -> bool:
    """Whether the rendered prompt ends inside an opened reasoning block (e.g. `...<|im_start|>assistant\\n<think>\\n`):
    the output then starts in the reasoning."""
    tail = (prompt or "").rstrip()
    return bool(tail) and not fmt.harmony and any(tail.endswith(start) for start, _ in fmt.pairs)


def prompt_reasoning(prompt: str | None, fmt: ReasoningFormat) -> bool | None:
    """True: the rendered prompt opened a reasoning block; None: there is no prompt to tell (a recorded output
    replayed, a token-id prompt): the output may still close a block a template opened, or be plain content."""
    if prompt is None:
        return False if fmt.harmony else None
    return prompt_opens_reasoning(prompt, fmt)


class ReasoningParser:
    """Output -> reasoning and the content after it. Reasoning opens only at the start of the output; the
    newlines right after the opening marker and right before the closing one are dropped (as the templates
    drop them when they render the reasoning back)."""

    def __init__(self, fmt: ReasoningFormat, in_reasoning: bool | None = False) -> None:
        self.fmt = fmt
        self.buf = ""
        self.state = "in" if (in_reasoning or fmt.forced) else "before"  # before -> in -> after_end -> after
        # None: no prompt tells whether the block was opened. Output without the opening tag is then held until
        # its closing tag (all before it is reasoning) or a tool call (content) shows, or it ends (content)
        self.unsure = in_reasoning is None and not fmt.forced
        self.seen = 0  # undecided text already searched for those markers
        self.opened = False  # the opening tag is behind us (or cannot come any more)
        self.lead = True  # still at the reasoning's start (its leading newlines are dropped)
        self.ends = tuple(end for _, end in fmt.pairs)  # what closes it (the opening's own once it is seen)
        self.dangling: tuple[str, ...] = ()  # after the reasoning: one more closing marker is dropped
        self.dangling_first = ""  # the character all of them begin with ("": not one)

    def feed(self, text: str, final: bool = False) -> Parsed:
        if self.state == "after" and not self.buf and (not self.dangling or self.dangling_first not in text):
            return Parsed(content=text)
        self.buf += text
        out = Parsed()
        if self.state == "before":
            stripped = self.buf.lstrip()
            pair = next((p for p in self.fmt.pairs if stripped.startswith(p[0])), None)
            if pair is not None:
                self.buf, self.state, self.opened = stripped[len(pair[0]) :], "in", True
                self.ends = (pair[1],)
            elif any(p[0].startswith(stripped) for p in self.fmt.pairs) and not final:
                return out
            else:
                self.state = "undecided" if self.unsure else "after"
        if self.state == "undecided":
            markers = (*self.ends, *self.fmt.interrupts)
            hit = find_first(self.buf, markers, self.seen)
            if hit is None and not final:
                self.seen = max(0, len(self.buf) - max(map(len, markers)))
                return out
            if hit is not None and hit[1] in self.ends:
                self.state, self.opened = "in", True  # the template opened it
            else:
                self.state = "after"
        if self.state == "in" and not self.opened:  # a prompt-opened block may still repeat the opening tag
            stripped = self.buf.lstrip()
            pair = next((p for p in self.fmt.pairs if stripped.startswith(p[0])), None)
            if pair is not None:
                self.buf, self.ends = stripped[len(pair[0]) :], (pair[1],)
            elif not final and any(p[0].startswith(stripped) for p in self.fmt.pairs):
                return out
            self.opened = True
        if self.state == "in":
            if self.lead:
                self.buf = self.buf.lstrip("\n")
                if not self.buf and not final:
                    return out
                self.lead = False
            hit = find_first(self.buf, (*self.ends, *self.fmt.interrupts))
            i = -1 if hit is None else hit[0]
            if i < 0:
                keep = partial_suffix(self.buf, (*self.ends, *self.fmt.interrupts))
                body = self.buf[: len(self.buf) - keep]
                if final:
                    out.reasoning += body.rstrip("\n")
                    self.buf = ""
                    return out
                sent = body.rstrip("\n")
                out.reasoning += sent
                self.buf = self.buf[len(sent) :]
                return out
            out.reasoning += self.buf[:i].rstrip("\n")
            skip = 0 if hit[1] in self.fmt.interrupts else len(hit[1])  # type: ignore[index]
            self.dangling = self.ends  # its close may still come, or come again (MiniMax-M2 repeats it): dropped once
            self.dangling_first = self.ends[0][0] if len({e[0] for e in self.ends}) == 1 else ""
            self.buf, self.state = self.buf[i + skip :], "after_end"
        if self.state == "after_end":  # whitespace between the reasoning and the answer is dropped
            self.buf = self.buf.lstrip()
            if not self.buf and not final:
                return out
            self.state = "after"
        if self.dangling:  # a close after a call opened inside the reasoning, or a repeated one: not content
            hit = find_first(self.buf, self.dangling)
            if hit is not None:
                out.content += self.buf[: hit[0]]
                self.buf, self.dangling = self.buf[hit[0] + len(hit[1]) :], ()
            elif not final:
                keep = partial_suffix(self.buf, self.dangling)
                out.content += self.buf[: len(self.buf) - keep]
                self.buf = self.buf[len(self.buf) - keep :]
                return out
        out.content += self.buf
        self.buf = ""
        return out
