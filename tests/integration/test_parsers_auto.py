"""`auto` parsers end to end: a worker started with no parser flags on a tiny model (made offline) whose chat
template is a Qwen one publishes qwen25 in its card, so the frontend parses (and can force) tool calls."""

from __future__ import annotations

import json
import shutil
import urllib.error
import urllib.request
from pathlib import Path

from tests.conftest import Cluster

TEMPLATE = ("{%- if tools %}<|im_start|>system\n# Tools\n<tools>{% for t in tools %}{{ t | tojson }}{% endfor %}"
            "</tools>\nFor each function call, return a json object with function name and arguments within "
            "<tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": <function-name>, \"arguments\": "
            "<args-json-object>}\n</tool_call><|im_end|>\n{%- endif %}{% for m in messages %}<|im_start|>"
            "{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>"
            "assistant\n{% endif %}")
TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string", "maxLength": 8}}, "required": ["city"]}}}]


def qwen_model(tiny: Path, into: Path) -> Path:
    out = into / "tiny-qwen"
    shutil.copytree(tiny, out)
    config = json.loads((out / "tokenizer_config.json").read_text())
    (out / "tokenizer_config.json").write_text(json.dumps({**config, "chat_template": TEMPLATE}))
    (out / "chat_template.jinja").write_text(TEMPLATE)
    return out


def test_a_qwen_template_gets_qwen_parsers_with_no_flag(cluster: Cluster, tmp_path: Path) -> None:
    cluster.model = qwen_model(cluster.model, tmp_path)
    cluster.worker()  # no --tool-call-parser: auto
    cluster.frontend()
    cluster.wait_models()
    body = {"model": cluster.model_name, "messages": [{"role": "user", "content": "weather?"}], "tools": TOOLS,
            "tool_choice": "required", "parallel_tool_calls": False, "max_tokens": 96}
    req = urllib.request.Request(cluster.url + "/v1/chat/completions", json.dumps(body).encode(),
                                 {"Content-Type": "application/json"})
    try:  # without a published parser this is a 400 naming --tool-call-parser
        with urllib.request.urlopen(req, timeout=60) as r:
            choice = json.loads(r.read())["choices"][0]
    except urllib.error.HTTPError as e:
        raise AssertionError(e.read().decode()) from e
    call = choice["message"]["tool_calls"][0]["function"]
    assert call["name"] == "get_weather" and isinstance(json.loads(call["arguments"])["city"], str)
    assert choice["finish_reason"] == "tool_calls"
    assert "parsers_detected" in "".join(p.tail(200) for p in cluster.procs if p.name.startswith("worker"))
