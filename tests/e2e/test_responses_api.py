"""/v1/responses through the official openai client against a real cluster (mock worker)."""

from __future__ import annotations

import json

import openai
import pytest


@pytest.fixture
def client(cluster) -> tuple[openai.OpenAI, str]:
    cluster.worker("--tool-call-parser", "qwen25", engine="mock")
    cluster.frontend()
    cluster.wait_models()
    return openai.OpenAI(base_url=cluster.url + "/v1", api_key="none", max_retries=0, timeout=30), cluster.model_name


def test_responses_create_plain_and_streamed_equal_the_chat_path(client) -> None:
    c, model = client
    chat = c.chat.completions.create(model=model, max_tokens=10, temperature=0, messages=[
        {"role": "system", "content": "be brief"}, {"role": "user", "content": "Hello"}])
    expected = chat.choices[0].message.content

    resp = c.responses.create(model=model, instructions="be brief", input="Hello", max_output_tokens=10,
                              temperature=0)
    assert resp.status == "incomplete" and resp.incomplete_details.reason == "max_output_tokens"
    assert resp.output_text == expected and resp.output[0].type == "message"
    assert resp.usage.output_tokens == chat.usage.completion_tokens
    assert resp.usage.input_tokens == chat.usage.prompt_tokens

    items = [{"role": "system", "content": "be brief"},
             {"role": "user", "content": [{"type": "input_text", "text": "Hello"}]}]
    with c.responses.stream(model=model, input=items, max_output_tokens=10, temperature=0) as stream:
        events = list(stream)
        final = stream.get_final_response()
    types = [e.type for e in events]
    assert types[:4] == ["response.created", "response.in_progress", "response.output_item.added",
                         "response.content_part.added"]
    assert types[-4:] == ["response.output_text.done", "response.content_part.done", "response.output_item.done",
                          "response.completed"]
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == expected
    assert final.output_text == expected and final.status == "incomplete"


def test_responses_with_a_required_function_tool_return_its_call(client) -> None:
    """tool_choice required: the grammar forces a call (random tokens), whole and streamed alike."""
    c, model = client
    tool = {"type": "function", "name": "get_weather", "description": "Weather in a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 12}},
                           "required": ["city"], "additionalProperties": False}}
    kw = {"model": model, "input": "Weather in Paris?", "tools": [tool], "tool_choice": "required",
          "max_output_tokens": 200, "temperature": 0}
    resp = c.responses.create(**kw)
    calls = [item for item in resp.output if item.type == "function_call"]
    assert resp.status == "completed" and calls and all(call.name == "get_weather" for call in calls)
    for call in calls:
        args = json.loads(call.arguments)
        assert set(args) == {"city"} and isinstance(args["city"], str)
    with c.responses.stream(**kw) as stream:
        deltas = "".join(e.delta for e in stream if e.type == "response.function_call_arguments.delta")
        final = stream.get_final_response()
    streamed = [item for item in final.output if item.type == "function_call"]
    assert [(x.name, x.arguments) for x in streamed] == [(x.name, x.arguments) for x in calls]
    assert deltas == "".join(call.arguments for call in calls)


def test_stateful_requests_are_a_clear_400(client) -> None:
    c, model = client
    for kwargs, param in [({"previous_response_id": "resp_123"}, "previous_response_id"), ({"store": True}, "store")]:
        with pytest.raises(openai.BadRequestError) as e:
            c.responses.create(model=model, input="hi", **kwargs)
        assert e.value.body["param"] == param
