"""/v1/responses <-> chat translation, on synthetic chat results and chunks."""

from __future__ import annotations

import json

import pytest

from services.frontend.preprocess import BadRequest
from services.frontend.responses_api import from_chat, parse_request, to_chat
from services.frontend.responses_stream import ResponseEvents

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


CHAT = {"choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
    "role": "assistant", "content": "Let me check.", "reasoning_content": "The user wants weather.",
    "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "get_weather",
                                                                     "arguments": "{\"city\":\"Paris\"}"}}]}}],
    "usage": {"prompt_tokens": 7, "completion_tokens": 9, "total_tokens": 16}}


def test_chat_message_becomes_reasoning_message_and_function_call_items() -> None:
    resp = from_chat(req(), CHAT)
    kinds = [(i["type"], i.get("call_id"), i.get("name"), i.get("arguments")) for i in resp["output"]]
    assert kinds == [("reasoning", None, None, None), ("message", None, None, None),
                     ("function_call", "call_1", "get_weather", "{\"city\":\"Paris\"}")]
    assert resp["output"][0]["content"][0]["text"] == "The user wants weather."
    assert resp["output"][1]["content"][0]["text"] == "Let me check."
    assert resp["usage"]["input_tokens"] == 7 and resp["usage"]["output_tokens"] == 9
    assert resp["status"] == "completed"


def _events(raw: bytes) -> list[dict]:
    return [json.loads(f.split(b"data: ", 1)[1]) for f in raw.split(b"\n\n") if f]


def test_chat_chunks_become_typed_events() -> None:
    ev = ResponseEvents(req())
    raw = ev.start()
    for delta in [{"reasoning_content": "Think"}, {"reasoning_content": "ing."}, {"content": "Hel"}, {"content": "lo"},
                  {"tool_calls": [{"index": 0, "id": "call_1", "function": {"name": "f", "arguments": ""}}]},
                  {"tool_calls": [{"index": 0, "function": {"arguments": "{\"a\":"}}]},
                  {"tool_calls": [{"index": 0, "function": {"arguments": "1}"}}]},
                  {"tool_calls": [{"index": 1, "id": "call_2", "function": {"name": "g", "arguments": "{}"}}]}]:
        raw += ev.feed({"choices": [{"index": 0, "delta": delta}]})
    raw += ev.feed({"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]})
    raw += ev.feed({"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}})
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
    raw = ev.start() + ev.feed({"choices": [{"index": 0, "delta": {"content": "x"}}]})
    raw += ev.finish({"message": "worker lost", "code": "worker_lost"})
    types = [e["type"] for e in _events(raw)]
    assert types[-2:] == ["error", "response.failed"]
