"""Streaming text: deltas never split a character, add up to the full decode; stop strings cut cleanly."""

from __future__ import annotations

import itertools
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.tokenizer import IncrementalDetokenizer, StopStringMatcher, Tokenizer

PIECES = ["a", "b", " ", "\n", "hello", "é", "ß", "你", "好", "界", "👋", "🏽", "👨‍👩‍👧", "🇫🇷", "e\u0301", "ü"]
EOS = 257


@pytest.fixture(scope="module")
def tok(tiny_model: Path) -> Tokenizer:
    return Tokenizer.from_dir(tiny_model)


def _stream(detok: IncrementalDetokenizer, ids: list[int], sizes: list[int]) -> list[str]:
    deltas, i, k = [], 0, 0
    while i < len(ids):
        n = sizes[k % len(sizes)] if sizes else 1
        deltas.append(detok.add(ids[i : i + n]))
        i, k = i + n, k + 1
    deltas.append(detok.flush())
    return deltas


@settings(max_examples=300, deadline=None)
@given(pieces=st.lists(st.sampled_from(PIECES), max_size=40), sizes=st.lists(st.integers(1, 7), max_size=10))
def test_deltas_of_valid_text_add_up_and_never_split_a_character(tok: Tokenizer, pieces: list[str],
                                                                 sizes: list[int]) -> None:
    text = "".join(pieces)
    deltas = _stream(IncrementalDetokenizer(tok), tok.encode(text), sizes)
    assert "".join(deltas) == text == tok.decode(tok.encode(text))
    assert not any("\ufffd" in d for d in deltas)


@settings(max_examples=300, deadline=None)
@given(ids=st.lists(st.one_of(st.integers(0, 260), st.sampled_from([0xE4, 0xF0, 0x9F, 0xBD, 0x80, EOS])),
                    max_size=40),
       sizes=st.lists(st.integers(1, 7), max_size=10), prompt=st.lists(st.integers(0, 255), max_size=8),
       skip=st.booleans())
def test_any_ids_even_invalid_utf8_stream_to_the_full_decode(tok: Tokenizer, ids: list[int], sizes: list[int],
                                                             prompt: list[int], skip: bool) -> None:
    detok = IncrementalDetokenizer(tok, prompt_ids=prompt, skip_special_tokens=skip)
    full = tok.decode(ids, skip_special_tokens=skip)
    sent = ""
    for delta in _stream(detok, ids, sizes):
        sent += delta
        assert full.startswith(sent)  # nothing emitted is ever taken back
    assert sent == full


def test_multibyte_characters_appear_whole_once_their_last_byte_arrives(tok: Tokenizer) -> None:
    detok = IncrementalDetokenizer(tok)
    assert [detok.add([i]) for i in tok.encode("a你👋")] == ["a", "", "", "你", "", "", "", "👋"]
    assert detok.flush() == ""


def test_text_before_an_incomplete_character_is_not_held_back(tok: Tokenizer) -> None:
    detok = IncrementalDetokenizer(tok)
    ids = tok.encode("hi 你")
    assert detok.add(ids[:-2]) == "hi "  # "hi " and the first byte of 你 arrive together
    assert detok.add(ids[-2:]) == "你"


def test_an_unfinished_character_is_flushed_as_a_replacement(tok: Tokenizer) -> None:
    detok = IncrementalDetokenizer(tok)
    assert detok.add([*tok.encode("ok"), 0xE4, 0xBD]) == "ok"
    assert detok.flush() == "\ufffd"


def test_prompt_context_does_not_leak_into_the_deltas(tok: Tokenizer) -> None:
    detok = IncrementalDetokenizer(tok, prompt_ids=tok.encode("<|user|>question 你好<|assistant|>"))
    assert "".join(_stream(detok, tok.encode("answer ✓"), [2])) == "answer ✓"


def test_special_tokens_are_skipped_or_kept(tok: Tokenizer) -> None:
    ids = [*tok.encode("hi"), EOS]
    assert "".join(_stream(IncrementalDetokenizer(tok), ids, [1])) == "hi"
    kept = IncrementalDetokenizer(tok, skip_special_tokens=False)
    assert "".join(_stream(kept, ids, [1])) == "hi<|eos|>"


class _CountingTokenizer(Tokenizer):
    longest = 0

    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str:  # type: ignore[override]
        self.longest = max(self.longest, len(ids))
        return super().decode(ids, skip_special_tokens)


def test_each_step_decodes_a_short_window_not_the_whole_text(tiny_model: Path) -> None:
    spy = _CountingTokenizer.from_dir(tiny_model)
    text = "streaming 你好 👋🏽 text " * 200
    deltas = _stream(IncrementalDetokenizer(spy), spy.encode(text), [1])
    assert "".join(deltas) == text
    assert 0 < spy.longest <= 10


def test_detokenizing_is_fast(tok: Tokenizer) -> None:
    ids = tok.encode("fast 你好 👋🏽 " * 400)
    detok = IncrementalDetokenizer(tok)
    start = time.perf_counter()
    for i in range(0, len(ids), 4):
        detok.add(ids[i : i + 4])
    per_call = (time.perf_counter() - start) / (len(ids) / 4)
    start = time.perf_counter()
    tok.decode(ids[:512])
    whole = time.perf_counter() - start
    assert per_call < 0.5e-3
    assert whole < 1e-3


# ---- stop strings ----------------------------------------------------------------------------------


def _feed_all(matcher: StopStringMatcher, chunks: list[str]) -> tuple[str, bool]:
    out = ""
    for chunk in chunks:
        text, stopped = matcher.feed(chunk)
        out += text
        if stopped:
            return out, True
    return out + matcher.flush(), False


def test_stop_string_spanning_chunks_is_cut_and_not_emitted() -> None:
    m = StopStringMatcher(["STOP"])
    assert m.feed("hello S") == ("hello ", False)
    assert m.feed("TO") == ("", False)
    assert m.feed("P and more") == ("", True)
    assert m.stopped == "STOP"
    assert m.feed("later") == ("", True)
    assert m.flush() == ""


def test_held_prefix_is_released_when_it_is_not_a_stop() -> None:
    m = StopStringMatcher(["</end>"])
    assert m.feed("a </e") == ("a ", False)
    assert m.feed("x") == ("</ex", False)
    assert m.feed("b </en") == ("b ", False)
    assert m.flush() == "</en"  # the stream ended without a stop


def test_earliest_stop_wins_and_overlaps_are_found() -> None:
    assert _feed_all(StopStringMatcher(["world", "lo w"]), ["hel", "lo wor", "ld"]) == ("hel", True)
    assert _feed_all(StopStringMatcher(["aab"]), ["a", "a", "a", "b", "c"]) == ("a", True)
    assert _feed_all(StopStringMatcher(["你好"]), ["说", "你", "好吗"]) == ("说", True)
    assert _feed_all(StopStringMatcher([]), ["as ", "is"]) == ("as is", False)


def test_chunking_never_changes_which_stop_matches() -> None:
    # "b" completes before "abc" does, so a character-by-character stream stops at "b"
    assert _feed_all(StopStringMatcher(["abc", "b"]), list("xabc")) == ("xa", True)
    assert _feed_all(StopStringMatcher(["abc", "b"]), ["xabc"]) == ("xa", True)


@settings(max_examples=300, deadline=None)
@given(text=st.text(alphabet="ab你 ", max_size=30), stops=st.lists(st.text(alphabet="ab你 ", min_size=1,
                                                                           max_size=4), min_size=1, max_size=3),
       cuts=st.lists(st.integers(0, 30), max_size=8))
def test_stop_matcher_equals_cutting_the_whole_text(text: str, stops: list[str], cuts: list[int]) -> None:
    bounds = [0, *sorted(c for c in cuts if c <= len(text)), len(text)]
    chunks = [text[a:b] for a, b in itertools.pairwise(bounds)]
    out, stopped = _feed_all(StopStringMatcher(stops), chunks)
    expected, expect_stop = text, False
    for end in range(1, len(text) + 1):  # the stop that completes first, as in a stream
        hits = [text.find(s) for s in stops if s in text[:end]]
        if hits:
            expected, expect_stop = text[: min(hits)], True
            break
    assert (out, stopped) == (expected, expect_stop)


@settings(max_examples=300, deadline=None)
@given(ids=st.lists(st.one_of(st.integers(0, 260), st.sampled_from([0xE4, 0xF0, 0x9F, 0xBD, 0x80, EOS])),
                    min_size=1, max_size=40),
       cuts=st.lists(st.integers(1, 7), max_size=10), stop=st.sampled_from([None, "a", "\ufffd", "ab", "\ufffdb"]))
def test_frontend_text_streamed_under_any_split_equals_decode_of_all_ids(tok: Tokenizer, ids: list[int],
                                                                        cuts: list[int], stop: str | None) -> None:
    """What the API sends (services.frontend.output), streamed in chunks of any size, is the
    tokenizer's decode of every generated id, cut before the first stop string."""
    from protocol.messages import OutputChunk
    from services.frontend.output import ChoiceOutput
    from services.frontend.steps import TextStep

    state = ChoiceOutput(tok, 0, [stop] if stop else [], want_logprobs=False)
    text, i, k = "", 0, 0
    while i < len(ids) and state.finish_reason is None:
        n = cuts[k % len(cuts)] if cuts else 1
        last = i + n >= len(ids)
        frame = state.feed([OutputChunk(token_ids=ids[i : i + n], finish_reason="length" if last else None)])
        text += "".join(s.text for s in frame if isinstance(s, TextStep))
        i, k = i + n, k + 1
    full = tok.decode(ids)
    assert text == (full[: full.find(stop)] if stop and stop in full else full)


def test_special_tokens_are_dropped_before_bytes_are_decoded(tok: Tokenizer) -> None:
    """The API's text is decode(ids, skip_special_tokens=True), as vLLM and SGLang send it: a special token
    between two bytes of one character leaves one U+FFFD (decode with specials kept shows two)."""
    ids = [0xE4, 259, 0xBD]  # the first two bytes of a 3-byte character around <|assistant|>
    detok = IncrementalDetokenizer(tok)
    assert "".join(detok.add([i]) for i in ids) + detok.flush() == tok.decode(ids) == "\ufffd"
    assert tok.decode(ids, skip_special_tokens=False) == "\ufffd<|assistant|>\ufffd"
