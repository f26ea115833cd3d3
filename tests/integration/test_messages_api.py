"""Anthropic's Messages API through the official `anthropic` SDK, unmodified, on real processes (reference
engine, the tiny random model, a worker with --tool-call-parser qwen25 --reasoning-parser qwen3): the same
token ids and usage as chat completions, forced tools, a tool_result turn, thinking blocks, count_tokens,
and the 400s that never reach a worker."""

from __future__ import annotations

import json
from typing import Any

import anthropic
import jsonschema
import openai
import pytest

from tests.tap import TokenTap

KEY = "sk-test-messages"
WEATHER = {"type": "object", "properties": {"city": {"type": "string", "maxLength": 12},
                                            "days": {"type": "integer", "minimum": 1, "maximum": 7}},
           "required": ["city", "days"], "additionalProperties": False}
TOOL = {"name": "get_weather", "description": "the forecast", "input_schema": WEATHER}
GREEDY = {"temperature": 0}  # the API's field; this SDK version sends it as an extra
HELLO = [{"role": "user", "content": "Say hello."}]


def _client(url: str) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=url, api_key=KEY, max_retries=0, timeout=120)


def _streamed(client: anthropic.Anthropic, **kw: Any) -> tuple[Any, list[Any]]:
    with client.messages.stream(**kw) as s:
        events = list(s)
        return s.get_final_message(), events


def test_messages_api_with_the_official_sdk(cluster):
    cluster.worker("--tool-call-parser", "qwen25", "--reasoning-parser", "qwen3", engine="reference")
    cluster.frontend("--api-key", KEY, "--reasoning-parser", "qwen3-thinking")
    thinking_url = cluster.url
    cluster.frontend("--api-key", KEY)
    cluster.wait_models()
    client, model = _client(cluster.url), cluster.model_name
    chat = openai.OpenAI(base_url=cluster.url + "/v1", api_key=KEY, max_retries=0, timeout=120)

    with TokenTap(cluster.nats.url, cluster.namespace) as tap:
        # create and stream: the same tokens and usage as chat completions for the same prompt
        want = chat.chat.completions.create(model=model, messages=HELLO, max_tokens=12, temperature=0)
        got = client.messages.create(model=model, messages=HELLO, max_tokens=12, extra_body=GREEDY,
                                     metadata={"user_id": "u1"})
        final, events = _streamed(client, model=model, messages=HELLO, max_tokens=12, extra_body=GREEDY)
        ids = tap.tokens(want.id)
        assert tap.tokens(got.id) == ids == tap.tokens(final.id)
        for m in (got, final):
            assert (m.usage.input_tokens, m.usage.output_tokens) == (want.usage.prompt_tokens,
                                                                     want.usage.completion_tokens)
            assert m.stop_reason == "max_tokens" and m.role == "assistant"
            assert "".join(b.text for b in m.content if b.type == "text") == want.choices[0].message.content
        kinds = [e.type for e in events]
        assert kinds[0] == "message_start" and kinds[-1] == "message_stop" and "message_delta" in kinds
        assert client.messages.count_tokens(model=model, messages=HELLO).input_tokens == got.usage.input_tokens

        # a forced tool: a tool_use block whose input validates; the streamed input_json_deltas concatenate to it
        forced = {"model": model, "messages": [{"role": "user", "content": "Weather in Paris?"}], "max_tokens": 200,
                  "extra_body": GREEDY, "tools": [TOOL], "tool_choice": {"type": "tool", "name": "get_weather"}}
        m = client.messages.create(**forced)
        use = next(b for b in m.content if b.type == "tool_use")
        assert m.stop_reason == "tool_use" and use.name == "get_weather"
        jsonschema.validate(use.input, WEATHER)
        final, events = _streamed(client, **forced)
        partial = "".join(e.delta.partial_json for e in events
                          if e.type == "content_block_delta" and e.delta.type == "input_json_delta")
        assert json.loads(partial) == use.input == next(b for b in final.content if b.type == "tool_use").input
        assert tap.tokens(final.id) == tap.tokens(m.id)

        # a tool_result turn round-trips, and count_tokens says the input_tokens it reports
        turn = {**forced, "tool_choice": {"type": "auto"}, "messages": [
            *forced["messages"], {"role": "assistant", "content": [
                {"type": "text", "text": "Let me look."},
                {"type": "tool_use", "id": use.id, "name": use.name, "input": use.input}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id,
                                          "content": [{"type": "text", "text": "sunny, 21C"}]},
                                         {"type": "text", "text": "Thanks!"}]}]}
        reply = client.messages.create(**turn)
        assert reply.stop_reason in ("end_turn", "max_tokens", "tool_use")
        count = {k: v for k, v in turn.items() if k not in ("max_tokens", "extra_body")}
        assert client.messages.count_tokens(**count).input_tokens == reply.usage.input_tokens
        assert reply.usage.input_tokens > m.usage.input_tokens

        # thinking blocks when reasoning is on (a frontend whose parser starts in reasoning), none when off
        think = _client(thinking_url)
        on = think.messages.create(model=model, messages=HELLO, max_tokens=12, extra_body=GREEDY,
                                   thinking={"type": "enabled", "budget_tokens": 1024})
        assert on.content and on.content[0].type == "thinking" and on.content[0].thinking
        final, events = _streamed(think, model=model, messages=HELLO, max_tokens=12, extra_body=GREEDY,
                                  thinking={"type": "enabled", "budget_tokens": 1024})
        deltas = "".join(e.delta.thinking for e in events
                         if e.type == "content_block_delta" and e.delta.type == "thinking_delta")
        assert deltas == final.content[0].thinking
        off = think.messages.create(model=model, messages=HELLO, max_tokens=12, extra_body=GREEDY,
                                    thinking={"type": "disabled"})
        assert [b.type for b in off.content] == ["text"]

        # bad input: 400 in Anthropic's shape, and no worker sees it
        sent = len(tap._attempts)
        bad: list[dict[str, Any]] = [
            {"model": model, "messages": HELLO},  # no max_tokens
            {"model": model, "max_tokens": 5, "messages": [{"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_nope", "content": "x"}]}]},
            {"model": model, "max_tokens": 5, "messages": [{"role": "user", "content": [
                {"type": "tool_use", "id": "t", "name": "get_weather", "input": {}}]}]},
            {"model": model, "max_tokens": 5, "messages": HELLO, "frobnicate": 1},
        ]
        for body in bad:
            with pytest.raises(anthropic.BadRequestError) as e:
                client.post("/v1/messages", body=body, cast_to=object)
            assert e.value.body["error"]["type"] == "invalid_request_error", e.value.body  # type: ignore[index]
        with pytest.raises(anthropic.AuthenticationError):
            anthropic.Anthropic(base_url=cluster.url, api_key="wrong", max_retries=0).messages.create(
                model=model, messages=HELLO, max_tokens=5)
        assert len(tap._attempts) == sent
