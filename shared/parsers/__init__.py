"""Tool-call and reasoning parsers over generated text, by SGLang's parser names.

Each parser is an incremental state machine over text: `feed(text)` returns what is
final so far, `finish()` the rest. Text that might still become a marker is held
back, so the result never depends on how the output was split into deltas, and no
marker reaches content, reasoning, names or arguments (an output cut short or
malformed inside a tool-call region ends as plain content).

    parser = OutputParser(tool_format("qwen25", tools), reasoning_format("qwen3"))
    delta = parser.feed(text)      # Parsed(content, reasoning, calls)
    last = parser.finish()
"""

from shared.parsers.output import OutputParser, Parsed, ToolCall
from shared.parsers.reasoning import REASONING_PARSERS, reasoning_format
from shared.parsers.tool_formats import TOOL_PARSERS, tool_format

__all__ = ["REASONING_PARSERS", "TOOL_PARSERS", "OutputParser", "Parsed", "ToolCall", "reasoning_format",
           "tool_format"]
