"""The output parser of one choice: reasoning first, then tool calls in what remains as content."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from shared.parsers.calls import ToolCallParser
from shared.parsers.harmony import HarmonyParser
from shared.parsers.output import Parsed, ToolFormat
from shared.parsers.reasoning import ReasoningFormat, ReasoningParser, prompt_reasoning, reasoning_format
from shared.parsers.tool_formats import GptOss, tool_format
from shared.parsers.trailing import TrailingEos


class OutputParser:
    """`feed(text)` returns what is final so far, `finish()` the rest, `parse(text)` a whole output.
    `in_reasoning`: the rendered prompt already opened a reasoning block (None: it may have)."""

    def __init__(self, tools: ToolFormat | None = None, reasoning: ReasoningFormat | None = None, *,
                 in_reasoning: bool | None = False) -> None:
        harmony = isinstance(tools, GptOss) or (reasoning is not None and reasoning.harmony)
        self.harmony = HarmonyParser(calls=tools is not None) if harmony else None
        if reasoning and tools and not harmony:  # a call opened inside the reasoning ends it (Qwen3, R1 do it)
            reasoning = replace(reasoning, interrupts=(*reasoning.interrupts, *_call_markers(tools)))
        self.reasoning = ReasoningParser(reasoning, in_reasoning) if reasoning and not harmony else None
        self.tools = ToolCallParser(tools) if tools and not harmony else None
        self.eos = TrailingEos()  # an end-of-turn token left at the output's end (harmony ends its own messages)

    def feed(self, text: str) -> Parsed:
        return self._run(text, False)

    def finish(self) -> Parsed:
        return self._run("", final=True)

    def parse(self, text: str) -> Parsed:
        """A whole output at once."""
        out = self.feed(text)
        out.add(self.finish())
        return out

    def _run(self, text: str, final: bool) -> Parsed:
        if self.harmony is not None:
            return self.harmony.feed(text, final)
        if final or self.eos.held or "<" in text:
            text = self.eos.feed(text, final)
        if self.reasoning is None:
            return self.tools.feed(text, final) if self.tools is not None else Parsed(content=text)
        out = self.reasoning.feed(text, final)
        if self.tools is not None and (out.content or final):
            tooled = self.tools.feed(out.content, final)
            out.content, out.calls = tooled.content, tooled.calls
        return out


def _call_markers(tools: ToolFormat) -> tuple[str, ...]:
    """The tool format's opening markers that no prose writes (`<tool_call>`, `[TOOL_CALLS]`, not `{"name"`)."""
    return tuple(s for s in tools.starts if s[:1] in "<[" and len(s) >= 5)


def make_parser(tool_parser: str | None, reasoning_parser: str | None, tools: list[dict[str, Any]],
                prompt: str | None) -> OutputParser | None:
    """The parser for one request: formats by name (KeyError for an unknown one), starting inside the
    reasoning when the rendered `prompt` ends in an opened reasoning block. None when nothing is parsed."""
    if tool_parser is None and reasoning_parser is None:
        return None
    rfmt = reasoning_format(reasoning_parser) if reasoning_parser else None
    return OutputParser(tool_format(tool_parser, tools) if tool_parser else None, rfmt,
                        in_reasoning=rfmt is not None and prompt_reasoning(prompt, rfmt))
