"""Model outputs from the peers' own parser tests (tests/fixtures/parser_corpus_peers.jsonl, from
tests/fixtures/parser_corpus_peers.py; the source file of each case is in it): every one parses as the model
meant, whole and streamed (one character a piece and in random splits), with no marker in the content,
reasoning, names or arguments. Content and reasoning are compared without the whitespace at their ends."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.unit.test_parsers_corpus import failures, run

PEERS = [json.loads(line) for line in (Path(__file__).parents[1] / "fixtures" / "parser_corpus_peers.jsonl")
         .read_text().splitlines()]


def peer_failures(case: dict[str, Any], seed: int) -> list[str]:
    try:
        whole = run(case, [case["raw"]])
    except Exception as e:
        return [f"crash {e!r}"]
    same_text = dict(case)
    for key in ("content", "reasoning"):  # the whitespace around text is the parser's to keep or drop
        if getattr(whole, key).strip() == case[key].strip():
            same_text[key] = getattr(whole, key)
    return failures(same_text, seed=seed, splits=4)


def test_peer_corpus_has_sources_and_families() -> None:
    assert len(PEERS) >= 100 and len({c["family"] for c in PEERS}) >= 15
    assert all(c["source"].startswith("https://github.com/") for c in PEERS)


@pytest.mark.parametrize("i", range(len(PEERS)), ids=[f'{c["family"]}-{i}' for i, c in enumerate(PEERS)])
def test_peer_output_parses_as_meant(i: int) -> None:
    assert peer_failures(PEERS[i], seed=i) == []


def test_without_a_prompt_the_start_waits_for_the_close_or_a_call() -> None:
    """With no prompt to tell whether the template opened `<think>` (a replayed output, a token-id prompt), text
    without the opening tag is held until `</think>` (reasoning before it) or a call (content) decides; with a
    prompt that did not open it, content streams at once."""
    from shared.parsers import make_parser

    p = make_parser("qwen25", "qwen3", [], None)
    assert p is not None
    held = p.feed("plan it")
    assert (held.content, held.reasoning) == ("", "")
    out = p.feed("</think>\n\nanswer")
    assert (out.reasoning, out.content) == ("plan it", "answer")
    p = make_parser("qwen25", "qwen3", [], None)
    assert p is not None and p.feed("Let me check.\n<tool_call>").content == "Let me check."
    p = make_parser("qwen25", "qwen3", [], "<|im_start|>assistant\n")
    assert p is not None and p.feed("hello ").content == "hello"


def test_a_bracket_in_text_that_is_no_call_list_streams_on() -> None:
    """Pythonic calls may follow text (`Sure: [f(x=1)]`); a bracket in prose that is a whole expression but no
    list of calls is text at once, not held to the end."""
    from shared.parsers import make_parser

    p = make_parser("llama4", None, [], "<|im_start|>assistant\n")
    assert p is not None
    assert p.feed("I used [print(x)").content == "I used"
    assert p.feed(" for x in y] here").content == " [print(x) for x in y] here"
    out = p.feed("Call: [f(x=']'")
    assert out.content == "Call:" and not out.calls
    assert [c.name for c in p.feed(")] done").calls] == ["f", None]
