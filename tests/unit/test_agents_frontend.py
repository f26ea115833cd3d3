"""The frontend's agent features without processes: request validation, output shapes, flags, chat history."""

from __future__ import annotations

import json
from pathlib import Path

import msgspec
import pytest

from protocol.messages import Grammar
from services.frontend.agents import MarkerDetokenizer, StreamedCalls, message_of, plan_chat
from services.frontend.args import parse as frontend_args
from services.frontend.openai_types import ChatCompletionRequest, Delta
from services.worker.args import parse as worker_args
from shared.errors import BadRequest
from shared.tokenizer import Tokenizer

TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]


def req(**kw: object) -> ChatCompletionRequest:
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], **kw}
    return msgspec.json.decode(json.dumps(body), type=ChatCompletionRequest)


@pytest.mark.parametrize("kw", [{}, {"chat_template_kwargs": {"enable_thinking": False}},
                                {"chat_template_kwargs": {"enable_thinking": True}}])
@pytest.mark.parametrize("parsers", [("qwen25", "qwen3"), (None, None), (None, "deepseek_r1")])
def test_a_plain_request_gets_the_plan_the_full_path_makes(kw: dict, parsers: tuple) -> None:
    """No tools, no grammar: the shared plan (made once) equals what the full path builds (tools=[] takes it)."""
    plain = plan_chat(req(**kw), *parsers)
    assert plain == plan_chat(req(tools=[], **kw), *parsers)
    assert plain is plan_chat(req(**kw), *parsers)


def test_plan_builds_one_grammar_and_picks_parsers() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    plan = plan_chat(req(response_format={"type": "json_schema", "json_schema": {"name": "s", "schema": schema}}),
                     None, None)
    assert plan.grammar == Grammar("json_schema", json.dumps(schema)) and not plan.parses
    assert plan_chat(req(response_format={"type": "json_object"}), None, None).grammar == Grammar("json_object")
    assert plan_chat(req(response_format={"type": "text"}), None, None).grammar is None
    assert plan_chat(req(choice=["a", 'b"c']), None, None).grammar == Grammar("ebnf", 'root ::= "a" | "b\\"c"')
    forced = plan_chat(req(tools=TOOLS, tool_choice="required"), "qwen25", "qwen3")
    assert forced.grammar is not None and forced.grammar.kind == "structural_tag"
    assert forced.tool_parser == "qwen25" and forced.reasoning_parser == "qwen3"
    # auto: parsed, not constrained; none: tools rendered but never parsed; no tools: nothing to parse
    auto = plan_chat(req(tools=TOOLS), "qwen25", None)
    assert auto.grammar is None and auto.tool_parser == "qwen25"
    assert plan_chat(req(tools=TOOLS, tool_choice="none"), "qwen25", None).tool_parser is None
    assert plan_chat(req(), "qwen25", None).tool_parser is None
    # qwen3 with thinking off: no reasoning parse
    off = plan_chat(req(chat_template_kwargs={"enable_thinking": False}), None, "qwen3")
    assert off.reasoning_parser is None


@pytest.mark.parametrize(("kw", "parser", "words"), [
    ({"response_format": {"type": "xml"}}, None, "response_format.type"),
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "x"}}}, None, "json_schema.schema"),
    ({"tool_choice": "required"}, "qwen25", "needs tools"),
    ({"tools": TOOLS, "tool_choice": "sometimes"}, "qwen25", "tool_choice must be"),
    ({"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "x"}}}, "qwen25", "not in tools"),
    ({"tools": TOOLS, "tool_choice": "required"}, None, "--tool-call-parser"),
    ({"tools": [{"type": "function", "function": {"name": "get-weather", "parameters": TOOLS[0]["function"][
        "parameters"]}}], "tool_choice": "required"}, "pythonic", "cannot be called in the pythonic format"),
    ({"tools": TOOLS, "tool_choice": "required"}, "nope", "not supported"),
    ({"tools": [{"type": "function"}]}, "qwen25", "tools\\[0\\]"),
    ({"regex": "a", "ebnf": 'root ::= "a"'}, None, "only one of"),
    ({"regex": "a", "response_format": {"type": "json_object"}}, None, "only one of"),
])
def test_plan_refuses_what_it_cannot_do(kw: dict, parser: str | None, words: str) -> None:
    with pytest.raises(BadRequest, match=words):
        plan_chat(req(**kw), parser, None)


async def test_a_grammar_that_does_not_compile_is_a_400_naming_the_problem(tiny_model: Path) -> None:
    tok = Tokenizer.from_dir(tiny_model)
    bad = plan_chat(req(response_format={"type": "json_schema", "json_schema": {"name": "s", "schema": {
        "type": "object", "properties": {"a": {"type": "nonsense"}}}}}), None, None)
    with pytest.raises(BadRequest, match="nonsense") as e:
        await bad.check(tok)
    assert e.value.param == "response_format"
    with pytest.raises(BadRequest, match="regex does not compile") as e:
        await plan_chat(req(regex="[a-"), None, None).check(tok)
    assert e.value.param == "regex"
    await plan_chat(req(regex="[a-z]+"), None, None).check(tok)


def test_output_shapes_whole_and_streamed() -> None:
    plan = plan_chat(req(tools=TOOLS), "qwen25", "qwen3")
    text = '<think>why</think>Sure.<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
    msg, had = message_of(plan.new_parser(), text)
    assert had and msg.content == "Sure." and msg.reasoning_content == "why"
    assert msg.tool_calls[0].function.name == "get_weather"
    assert json.loads(msg.tool_calls[0].function.arguments) == {"city": "Paris"}
    assert msg.tool_calls[0].id.startswith("call_") and msg.tool_calls[0].type == "function"
    stream = StreamedCalls(plan.new_parser())
    deltas = [stream.delta(text[i : i + 3], i + 3 >= len(text)) for i in range(0, len(text), 3)]
    assert "".join(d.reasoning_content or "" for d in deltas) == "why"
    assert "".join(d.content or "" for d in deltas) == "Sure."
    calls = [c for d in deltas for c in d.tool_calls or []]
    assert [(c.index, c.function.name) for c in calls][:1] == [(0, "get_weather")] and calls[0].id
    assert all(c.index == 0 and c.id is None and c.function.name is None for c in calls[1:])  # fragments
    assert json.loads("".join(c.function.arguments for c in calls)) == {"city": "Paris"}
    assert Delta() in deltas  # held-back text sends nothing yet
    two = StreamedCalls(plan.new_parser())
    call = '<tool_call>{"name": "get_weather", "arguments": {}}</tool_call>'
    got = [c for piece in (call, call) for c in two.delta(piece, False).tool_calls or []]
    assert [c.index for c in got] == [0, 1] and got[0].id != got[1].id
    plain, had = message_of(plan.new_parser(), "no calls")
    assert not had and plain.content == "no calls" and plain.tool_calls is None


def test_marker_detokenizer_keeps_special_tokens_but_drops_eos(tiny_model: Path) -> None:
    tok = Tokenizer.from_dir(tiny_model)
    user, eos = tok.token_to_id("<|user|>"), tok.token_to_id("<|eos|>")
    detok = MarkerDetokenizer(tok)
    assert detok.add([*b"a", user, *b"b", eos]) + detok.flush() == "a<|user|>b"


def test_history_with_tool_calls_renders_through_the_template(tiny_model: Path) -> None:
    tok = Tokenizer.from_dir(tiny_model)
    tok.chat_template = ("{% for m in messages %}{{ m.role }}:{{ m.content }}{% for c in m.tool_calls or [] %}"
                         "[{{ c.function.name }}({{ c.function.arguments.city }})]{% endfor %};{% endfor %}")
    messages = [{"role": "user", "content": "weather?"},
                {"role": "assistant", "content": None, "tool_calls": [{"id": "call_1", "type": "function", "function": {
                    "name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
                {"role": "tool", "tool_call_id": "call_1", "content": "sunny"}]
    assert tok.apply_chat_template(messages, add_generation_prompt=False) == (
        "user:weather?;assistant:[get_weather(Paris)];tool:sunny;")


def test_worker_publishes_and_frontend_overrides_parser_flags(tiny_model: Path) -> None:
    w = worker_args(["--model-path", str(tiny_model), "--tool-call-parser", "qwen25", "--reasoning-parser", "qwen3"])
    assert (w.tool_call_parser, w.reasoning_parser) == ("qwen25", "qwen3")
    sg = worker_args(["--model-path", str(tiny_model), "--engine", "sglang", "--tool-call-parser", "qwen25"])
    assert sg.engine.extra_args[-2:] == ["--tool-call-parser", "qwen25"]  # reaches SGLang unchanged
    f = frontend_args(["--tool-call-parser", "mistral"])
    assert f.tool_call_parser == "mistral" and f.reasoning_parser is None
    with pytest.raises(SystemExit):
        worker_args(["--model-path", str(tiny_model), "--tool-call-parser", "nope"])
