"""The parser corpus (tests/unit/parser_corpus.py): every case parsed whole and streamed under many splits
gives the expected content, reasoning and calls, whatever the split; no marker leaks."""

from __future__ import annotations

import json
import random

import pytest

from shared.parsers import OutputParser, Parsed, join_calls, reasoning_format, tool_format
from tests.unit.parser_corpus import CASES, Case

TOOLS = [{"type": "function", "function": {"name": n, "parameters": {"type": "object", "properties": props}}}
         for n, props in [("get_weather", {"city": {"type": "string"}, "days": {"type": "integer"}}),
                          ("u", {"text": {"type": "string"}, "emoji": {"type": "string"}})]]
MARKERS = ("<tool_call>", "</tool_call>", "[TOOL_CALLS]", "<|python_tag|>", "<|tool_call", "<think>", "</think>",
           "<|channel|>", "<|message|>", "<arg_key>", "<function=", "\uff5ctool")


def parser(case: Case) -> OutputParser:
    return OutputParser(tool_format(case.tool, TOOLS) if case.tool else None,
                        reasoning_format(case.reasoning) if case.reasoning else None)


def run(case: Case, pieces: list[str]) -> Parsed:
    p, out = parser(case), Parsed()
    for piece in pieces:
        out.add(p.feed(piece))
    out.add(p.finish())
    return out


def splits(text: str, seed: int) -> list[list[str]]:
    """Whole; one character a delta; every two-way cut; random groupings."""
    rng = random.Random(seed)
    out = [[text], list(text)]
    out += [[text[:i], text[i:]] for i in range(1, len(text))]
    for _ in range(30):
        cuts = sorted(rng.sample(range(1, len(text)), min(len(text) - 1, rng.randint(1, 12)))) if len(text) > 1 else []
        out.append([text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True)])
    return out


def _ids(case: Case) -> str:
    return f"{case.tool}-{case.reasoning}-{case.source}-{case.raw[:20]!r}"


@pytest.mark.parametrize("case", CASES, ids=[_ids(c) for c in CASES])
def test_case_parses_the_same_whole_and_under_every_split(case: Case) -> None:
    whole = parser(case).parse(case.raw)
    assert whole.content == case.content
    assert whole.reasoning == case.reasoning_text
    assert [(c.name, json.loads(c.arguments)) for c in join_calls(whole.calls)] == case.calls
    for i, pieces in enumerate(splits(case.raw, seed=len(case.raw))):
        got = run(case, pieces)
        assert (got.content, got.reasoning, join_calls(got.calls)) == (whole.content, whole.reasoning,
                                                                    join_calls(whole.calls)), f"split {i}: {pieces!r}"
    if case.calls and not any(m in case.content for m in MARKERS):  # parsed: no marker anywhere
        for text in (whole.content, whole.reasoning, *(c.name + c.arguments for c in join_calls(whole.calls))):
            leaked = [m for m in MARKERS if m in text and m not in json.dumps(case.calls, ensure_ascii=False)]
            assert not leaked


def test_unknown_parser_names_are_refused() -> None:
    with pytest.raises(KeyError, match="unknown tool-call parser"):
        tool_format("nope", [])
    with pytest.raises(KeyError, match="unknown reasoning parser"):
        reasoning_format("nope")
    assert reasoning_format("qwen3", enabled=False) is None
