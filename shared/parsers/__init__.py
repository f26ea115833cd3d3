"""Tool-call and reasoning parsers over generated text, by SGLang's parser names (and `auto`).

Each parser is an incremental state machine over text: `feed(text)` returns what is
final so far, `finish()` the rest. Text that might still become a marker is held
back, so the result never depends on how the output was split into deltas, and no
marker reaches content, reasoning, names or arguments. A call streams: its first
delta carries the name, the next ones fragments of its arguments JSON, which
concatenate to the final arguments (`join_calls` puts them together).

    parser = make_parser("qwen25", "qwen3", tools, prompt)   # or OutputParser(...)
    delta = parser.feed(text)      # Parsed(content, reasoning, calls: [CallDelta(index, name, arguments)])
    last = parser.finish()
"""

from shared.parsers.output import CallDelta, Parsed, ToolCall, join_calls
from shared.parsers.parser import OutputParser, make_parser
from shared.parsers.reasoning import REASONING_PARSERS, reasoning_format
from shared.parsers.tool_formats import TOOL_PARSERS, tool_format

__all__ = ["REASONING_PARSERS", "TOOL_PARSERS", "CallDelta", "OutputParser", "Parsed", "ToolCall", "join_calls",
           "make_parser", "reasoning_format", "tool_format"]
