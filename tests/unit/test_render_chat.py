"""The chat renderer's text chunks come from pre-encoded parts (services.frontend.render_chat): byte for byte what
the ChatCompletionChunk structs encode to, for any text, the role on a choice's first chunk, a finish reason,
and a parsing plan (no empty content then)."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from services.frontend.render_chat import ChatRenderer
from services.frontend.steps import FinishStep, Frame, TextStep

TEXTS = ["hello", "", 'quote " backslash \\ slash /', "tab\tnewline\n\x01\x1f", "caf\u00e9 \u4e2d\u6587 \U0001f600",
         "\u2028\u2029 </script>", "\ufffd"]


def renderer(parses: bool) -> ChatRenderer:
    plan = SimpleNamespace(parses=parses) if parses else None
    job = SimpleNamespace(request_id='chatcmpl-"x"\u00e9', model=SimpleNamespace(name="m/\u00e9\"q"),
                          prepared=SimpleNamespace(include_usage=True), plan=plan)
    return ChatRenderer(job)  # type: ignore[arg-type]


def frames() -> list[tuple[int, Frame]]:
    out: list[tuple[int, Frame]] = []
    for choice in (0, 3):
        out += [(choice, [TextStep(t, choice)]) for t in TEXTS]
        out += [(choice, [TextStep("a", choice), TextStep("b", choice), FinishStep("stop", None, choice)]),
                (choice, [FinishStep("length", None, choice)]), (choice, [TextStep("", choice)])]
    return out


@pytest.mark.parametrize("parses", [False, True])
def test_text_chunks_are_the_structs_bytes(parses: bool) -> None:
    fast, slow = renderer(parses), renderer(parses)
    fast_roles: set[int] = set()
    slow_roles: set[int] = set()
    for choice, frame in frames():
        got = fast._chunk(frame, choice, fast_roles, set())
        want = slow._struct_chunk(frame, choice, slow_roles, set())
        assert got == want, (frame, got, want)
        assert fast.ended == slow.ended
        if got:
            assert json.loads(got[len(b"data: "):])["choices"][0]["index"] == choice
    assert fast_roles == slow_roles == {0, 3}


def test_a_finish_after_tool_calls_is_tool_calls() -> None:
    r = renderer(True)
    got = r._chunk([FinishStep("stop")], 0, {0}, {(0, 0)})
    assert json.loads(got[len(b"data: "):])["choices"][0]["finish_reason"] == "tool_calls"
