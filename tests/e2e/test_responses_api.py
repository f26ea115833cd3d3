"""/v1/responses through the official openai client against a real cluster (mock worker)."""

from __future__ import annotations

import openai
import pytest


@pytest.fixture
def client(cluster) -> tuple[openai.OpenAI, str]:
    cluster.worker(engine="mock")
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


def test_responses_with_a_function_tool_is_accepted(client) -> None:
    c, model = client
    tool = {"type": "function", "name": "get_weather", "description": "Weather in a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}
    resp = c.responses.create(model=model, input="Weather in Paris?", tools=[tool], tool_choice="required",
                              max_output_tokens=8)
    assert resp.output and resp.status in ("completed", "incomplete")  # tool calls themselves: issue 11


def test_stateful_requests_are_a_clear_400(client) -> None:
    c, model = client
    for kwargs, param in [({"previous_response_id": "resp_123"}, "previous_response_id"), ({"store": True}, "store")]:
        with pytest.raises(openai.BadRequestError) as e:
            c.responses.create(model=model, input="hi", **kwargs)
        assert e.value.body["param"] == param
