"""The generated corpus (tests/fixtures/parser_corpus.jsonl, from tests/fixtures/parser_corpus_gen.py): every
family's outputs parse as the model meant, whole and streamed under random splits, the argument fragments
concatenate to the final arguments, and no marker reaches content, reasoning, names or arguments."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from shared.parsers import Parsed, join_calls, make_parser
from tests.fixtures.parser_corpus_gen import MARKER_WORDS, TOOLS

CORPUS = [json.loads(line) for line in (Path(__file__).parents[1] / "fixtures" / "parser_corpus.jsonl")
          .read_text().splitlines()]


def run(case: dict[str, Any], pieces: list[str]) -> Parsed:
    prompt = None if case.get("no_prompt") else "<|im_start|>assistant\n" + case["prompt_tail"]
    p = make_parser(case["tool_parser"], case["reasoning_parser"], case.get("tools", TOOLS), prompt)
    assert p is not None
    out = Parsed()
    for piece in pieces:
        out.add(p.feed(piece))
    out.add(p.finish())
    return out


def view(out: Parsed) -> tuple[str, str, list[tuple[str, str]]]:
    return out.content, out.reasoning, [(c.name, c.arguments) for c in join_calls(out.calls)]


def failures(case: dict[str, Any], seed: int = 0, splits: int = 4) -> list[str]:
    """Why the case fails (empty: it passes)."""
    raw, why = case["raw"], []
    try:
        whole = run(case, [raw])
    except Exception as e:
        return [f"crash {e!r}"]
    content, reasoning, calls = view(whole)
    if case["calls"] is not None:
        got = []
        for name, args in calls:
            try:
                got.append({"name": name, "arguments": json.loads(args)})
            except json.JSONDecodeError:
                got.append({"name": name, "arguments": args})
        if (content, reasoning, got) != (case["content"], case["reasoning"], case["calls"]):
            why.append(f"parse {(content, reasoning, got)!r}")
    quoted = json.dumps(case["calls"], ensure_ascii=False) + (case["content"] or "") + (case["reasoning"] or "")
    for text in (content, reasoning, *(n + a for n, a in calls)):
        leaked = [m for m in MARKER_WORDS if m in text and m not in quoted]
        if leaked:
            why.append(f"marker {leaked} in {text!r}")
    rng = random.Random(seed)
    cuts_list = [list(range(1, len(raw)))]  # one character a piece
    cuts_list += [sorted(rng.sample(range(1, len(raw)), min(len(raw) - 1, rng.randint(1, 20))))
                  for _ in range(splits)] if len(raw) > 1 else []
    for cuts in cuts_list:
        pieces = [raw[a:b] for a, b in zip([0, *cuts], [*cuts, len(raw)], strict=True)]
        if view(run(case, pieces)) != view(whole):
            why.append(f"split {pieces!r}")
            break
    return why


def test_corpus_size_and_families() -> None:
    assert len(CORPUS) >= 500 and len({c["family"] for c in CORPUS}) >= 10
    assert all(c["source"] for c in CORPUS)


def test_corpus_passes_97_percent_and_every_family_is_parsed() -> None:
    failed = {i: w for i, c in enumerate(CORPUS) if (w := failures(c))}
    rate = 1 - len(failed) / len(CORPUS)
    shown = [(CORPUS[i]["family"], CORPUS[i]["raw"][:80], w[:1]) for i, w in list(failed.items())[:10]]
    assert rate >= 0.97, f"{rate:.1%} pass; first failures: {shown}"


@settings(max_examples=60, deadline=None)
@given(st.sampled_from([c for c in CORPUS if c["calls"]]), st.lists(st.integers(1, 10_000), max_size=12))
def test_any_split_gives_the_same_parse_and_fragments_concatenate(case: dict[str, Any], cuts: list[int]) -> None:
    raw = case["raw"]
    points = sorted({c % len(raw) for c in cuts} - {0})
    pieces = [raw[a:b] for a, b in zip([0, *points], [*points, len(raw)], strict=True)]
    streamed = run(case, pieces)
    assert view(streamed) == view(run(case, [raw]))
    by_index: dict[int, str] = {}
    for d in streamed.calls:
        assert (d.name is not None) == (d.index not in by_index)  # the name on the first delta only
        by_index[d.index] = by_index.get(d.index, "") + d.arguments
    assert [(c.name, c.arguments) for c in join_calls(streamed.calls)] == view(streamed)[2]
    assert all(json.loads(a) is not None for a in by_index.values())


PIECES = [*MARKER_WORDS, "</function>", "</parameter>", "</arg_value>", "<|tool_call_end|>", "<|call|>", "<|end|>",
          "[CALL_ID]", "```json\n", "{", "}", "[", "]", '"', ":", ",", "\\", "a", " ", "\n", "f(x=1)", '"name"',
          '{"name": "f", "arguments": ', "functions.f", "commentary to=functions.f", "final", "<|constrain|>json"]


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(sorted({c["tool_parser"] + "|" + (c["reasoning_parser"] or "") for c in CORPUS})),
       st.lists(st.sampled_from(PIECES), max_size=40), st.lists(st.integers(1, 10_000), max_size=8))
def test_any_output_parses_without_error_and_the_same_streamed(names: str, words: list[str], cuts: list[int]) -> None:
    """Output no parser understands (marker soup) is text or calls, never an exception, whatever the split."""
    tool, reasoning = names.split("|")
    raw = "".join(words)
    case = {"tool_parser": tool, "reasoning_parser": reasoning or None, "prompt_tail": ""}
    whole = run(case, [raw])
    points = sorted({c % max(1, len(raw)) for c in cuts} - {0})
    pieces = [raw[a:b] for a, b in zip([0, *points], [*points, len(raw)], strict=True)]
    assert view(run(case, pieces)) == view(whole)
