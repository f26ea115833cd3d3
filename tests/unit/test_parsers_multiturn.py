"""Multi-turn: an assistant turn with tool_calls and reasoning_content, then `role: tool` messages, renders
through real chat templates (tests/fixtures/chat_templates, sources in SOURCES.md); the assistant turn as the
template writes it parses back (with the parsers `auto` picks from that template) to the same calls."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from shared.parsers import join_calls, make_parser
from shared.parsers.detect import detect
from shared.tokenizer.chat import render_chat

TEMPLATES = Path(__file__).parents[1] / "fixtures" / "chat_templates"
SPECIALS = {"bos_token": "<s>", "eos_token": "</s>"}
TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "Weather of a city.",
                                           "parameters": {"type": "object", "properties": {
                                               "city": {"type": "string", "description": "the city"},
                                               "days": {"type": "integer", "description": "how many"},
                                               "metric": {"type": "boolean", "description": "units"}}}}}]
CALLS = [("get_weather", {"city": "Paris", "days": 2, "metric": True}), ("get_weather", {"city": "東京 \"x\""})]
# template -> (tool parser auto picks, the end-of-turn text the detokenizer drops (an end-of-sequence token))
CASES = {"qwen3coder.jinja": ("qwen3_coder", "<|im_end|>\n"), "hermes.jinja": ("qwen25", "<|im_end|>\n"),
         "qwen3.jinja": ("qwen25", "<|im_end|>\n"), "llama3.1_json.jinja": ("llama3", "<|eot_id|>"),
         "deepseekv32.jinja": ("deepseekv31", "<\uff5cend\u2581of\u2581sentence\uff5c>"),
         "gpt-oss.jinja": ("gpt-oss", "<|end|>"),
         "deepseekv3.jinja": ("deepseekv3", "<\uff5cend\u2581of\u2581sentence\uff5c>"),
         "mistral_parallel.jinja": ("mistral", "</s>"), "glm4.5.jinja": ("glm45", ""),
         "kimi-k2-thinking.jinja": ("kimi_k2", "<|im_end|>")}
# the call ids a client sends back: Kimi's template writes the id as the call's header, in Kimi's own form
CALL_ID = {"kimi-k2-thinking.jinja": "functions.{name}:{i}"}
# templates that write the prompt's last user turn differently once a reply follows (Mistral puts the system
# message in the last user turn): the reply is what follows this marker in the rendered turn
REPLY_AFTER = {"mistral_parallel.jinja": "[/INST]"}
ONE_CALL = ("llama3", "gpt-oss")  # templates that render one call a turn


def conversation(content: str | None, calls: list[tuple[str, dict]], ids: str = "call{i:06d}") -> list[dict]:
    return [
        {"role": "user", "content": "Weather in Paris and Tokyo?"},
        {"role": "assistant", "content": content, "reasoning_content": "Two cities: two calls.",
         "tool_calls": [{"id": ids.format(name=n, i=i), "type": "function",
                         "function": {"name": n, "arguments": json.dumps(a, ensure_ascii=False)}}
                        for i, (n, a) in enumerate(calls)]},
        *({"role": "tool", "tool_call_id": ids.format(name=n, i=i), "name": n, "content": f"sunny {i}"}
          for i, (n, _) in enumerate(calls)),
    ]


def after(text: str, prefix: str) -> str:
    """`text` past `prefix`, whitespace aside (a template's generation prompt and its rendering of the same turn
    may differ in whitespace only)."""
    i = 0
    for ch in prefix:
        if ch.isspace():
            continue
        while text[i].isspace():
            i += 1
        assert text[i] == ch, (text[: i + 20], prefix)
        i += 1
    return text[i:].lstrip()


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("content", [None, "Checking both."])
def test_history_renders_and_the_assistant_turn_parses_back(name: str, content: str | None) -> None:
    source = (TEMPLATES / name).read_text()
    tool_parser, end_of_turn = CASES[name]
    found = detect(source)
    assert found.tool_parser == tool_parser
    calls = CALLS[:1] if name.startswith(ONE_CALL) else CALLS
    messages = conversation(content, calls, *([CALL_ID[name]] if name in CALL_ID else []))
    whole = render_chat(source, messages, add_generation_prompt=True, tools=TOOLS, specials=SPECIALS)
    assert all(f"sunny {i}" in whole for i in range(len(calls)))  # the tool results are in the next prompt
    prompt = render_chat(source, messages[:1], add_generation_prompt=True, tools=TOOLS, specials=SPECIALS)
    turn = render_chat(source, messages[:2], add_generation_prompt=False, tools=TOOLS, specials=SPECIALS)
    # the text both share (a template's prompt and its rendering of the turn may differ in whitespace)
    n = min(len(prompt), len(turn))
    common = next((i for i in range(n) if prompt[i] != turn[i]), n)
    reply = turn.rsplit(REPLY_AFTER[name], 1)[1] if name in REPLY_AFTER else after(turn[common:], prompt[common:])
    output = reply.rstrip("\n").removesuffix(end_of_turn.rstrip("\n"))
    parser = make_parser(found.tool_parser, found.reasoning_parser, TOOLS, prompt)
    assert parser is not None
    got = parser.parse(output)
    assert [(c.name, json.loads(c.arguments)) for c in join_calls(got.calls)] == calls
    assert got.content.strip() in ("", content or "")
    if "reasoning_content" in source:  # a template that renders the reasoning back: it parses back as reasoning
        assert got.reasoning == "Two cities: two calls." and got.content == (content or "")
