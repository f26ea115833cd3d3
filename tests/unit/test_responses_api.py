"""/v1/responses <-> chat translation, on synthetic chat results and chunks."""

from __future__ import annotations

import json

import pytest

from protocol.messages import Usage
from services.frontend.render_responses import ResponseEvents
from services.frontend.responses_api import parse_request, to_chat
from services.frontend.steps import ErrorStep, FinishStep, ReasoningStep, TextStep, ToolCallStep, UsageStep
from shared.errors import BadRequest

TOOL = {"type": "function", "name": "get_weather", "description": "weather", "parameters": {"type": "object"}}


def req(**fields: object):  # type: ignore[no-untyped-def]
    return parse_request(json.dumps({"model": "m", "input": "hi", **fields}).encode(), False)


def test_request_becomes_a_chat_request() -> None:
    r = req(instructions="be brief", tools=[TOOL], tool_choice="required", max_output_tokens=5,
            text={"format": {"type": "json_schema", "name": "x", "schema": {"type": "object"}, "strict": True}},
            reasoning={"effort": "low"}, input=[
                {"role": "user", "content": [{"type": "input_text", "text": "weather?"}]},
                {"type": "function_call", "call_id": "c1", "name": "get_weather", "arguments": "{}"},
                {"type": "function_call_output", "call_id": "c1", "output": "sunny"},
                {"type": "reasoning", "id": "rs_1", "summary": []}])
    chat = to_chat(r)
    assert chat["messages"] == [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": [{"type": "text", "text": "weather?"}]},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "sunny"}]
    assert chat["tools"] == [{"type": "function", "function": {"name": "get_weather", "description": "weather",
                                                               "parameters": {"type": "object"}}}]
    assert chat["tool_choice"] == "required" and chat["max_completion_tokens"] == 5
    assert chat["response_format"] == {"type": "json_schema", "json_schema": {
        "name": "x", "schema": {"type": "object"}, "strict": True}}
    assert chat["reasoning_effort"] == "low"


@pytest.mark.parametrize(("field", "value"), [("previous_response_id", "resp_1"), ("store", True),
                                              ("background", True), ("frobnicate", 1), ("truncation", "auto")])
def test_stateful_and_unknown_fields_are_a_400_naming_them(field: str, value: object) -> None:
    with pytest.raises(BadRequest) as e:
        req(**{field: value})
    assert e.value.param == field


def test_non_function_tools_are_refused() -> None:
    with pytest.raises(BadRequest) as e:
        to_chat(req(tools=[{"type": "web_search"}]))
    assert e.value.param == "tools"


def _events(raw: bytes) -> list[dict]:
    return [json.loads(f.split(b"data: ", 1)[1]) for f in raw.split(b"\n\n") if f]


def test_chat_chunks_become_typed_events() -> None:
    ev = ResponseEvents(req())
    raw = ev.start()
    for step in [ReasoningStep("Think"), ReasoningStep("ing."), TextStep("Hel"), TextStep("lo"),
                 ToolCallStep(0, "call_1", "f", ""), ToolCallStep(0, None, None, "{\"a\":"),
                 ToolCallStep(0, None, None, "1}"), ToolCallStep(1, "call_2", "g", "{}")]:
        raw += ev.feed([step])
    raw += ev.feed([FinishStep("stop")])
    raw += ev.feed([UsageStep(Usage(3, 4))])
    raw += ev.finish()
    events = _events(raw)
    types = [e["type"] for e in events]
    assert types[:2] == ["response.created", "response.in_progress"]
    assert types[-1] == "response.completed"
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    assert "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta") == "Hello"
    assert [e["text"] for e in events if e["type"] == "response.output_text.done"] == ["Hello"]
    assert [e["arguments"] for e in events if e["type"] == "response.function_call_arguments.done"] == \
        ["{\"a\":1}", "{}"]
    assert types.count("response.output_item.added") == types.count("response.output_item.done") == 4
    final = events[-1]["response"]
    assert [i["type"] for i in final["output"]] == ["reasoning", "message", "function_call", "function_call"]
    assert [i.get("call_id") for i in final["output"][2:]] == ["call_1", "call_2"]
    assert final["usage"]["total_tokens"] == 7


def test_a_failed_chat_stream_ends_in_response_failed() -> None:
    ev = ResponseEvents(req())
    raw = ev.start() + ev.feed([TextStep("x")])
    raw += ev.finish(ErrorStep(502, "worker_lost", "worker lost"))
    types = [e["type"] for e in _events(raw)]
    assert types[-2:] == ["error", "response.failed"]
