"""`auto` parsers: tiny models made offline with each family's chat template (the tool-call and reasoning part
of the template, excerpted from the source named) pick the right parsers with no flag; bad tools are refused."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import msgspec
import pytest

from services.frontend.agents import plan_chat
from services.frontend.openai_types import ChatCompletionRequest
from shared.errors import BadRequest
from shared.parsers.detect import detect, model_parsers, resolve_parsers
from shared.parsers.validate import check_tools
from shared.tokenizer import Tokenizer
from tests.fixtures.parser_corpus_gen import D, ds

CALLS, CALL, SEP = ds("tool calls begin"), ds("tool call begin"), ds("tool sep")

HF = "https://huggingface.co/"
# family -> (template excerpt, source, tool parser, reasoning parser)
TEMPLATES = {
    "qwen3": ('{%- if tools %}<tools>{{ tools | tojson }}</tools> <tool_call>\\n{"name": <function-name>, '
              '"arguments": <args-json-object>}\\n</tool_call>{%- endif %}{{ "<|im_start|>assistant\\n<think>\\n" '
              'if add_generation_prompt }}', HF + "Qwen/Qwen3-8B", "qwen25", "think"),
    "qwen3-coder": ("{% if tools %}<tool_call>\\n<function=example_function_name>\\n<parameter=example_parameter_1>"
                    "\\nvalue_1\\n</parameter>\\n</function>\\n</tool_call>{% endif %}",
                    HF + "Qwen/Qwen3-Coder-30B-A3B-Instruct", "qwen3_coder", None),
    "qwen3.5": ("{% if tools %}<tool_call>\\n<function=f>\\n<parameter=p>\\nv\\n</parameter>\\n</function>"
                "{% endif %}<|im_start|>assistant\\n<think>\\n", HF + "Qwen/Qwen3.5-397B-A17B", "qwen3_coder", "think"),
    "deepseek-v3.1": (f"{{{{'{CALLS}{CALL}' + tool['function']['name'] + '{SEP}'}}}}<think>",
                      HF + "deepseek-ai/DeepSeek-V3.1", "deepseekv31", "think"),
    "deepseek-v3": (f"{{{{'{CALLS}{CALL}' + tool['type'] + '{SEP}' + tool['function']['name'] + '```json'}}}}",
                    HF + "deepseek-ai/DeepSeek-V3-0324", "deepseekv3", None),
    "deepseek-v3.2": (f"{{{{ '<{D}function_calls>' }}}}<{D}invoke name=\"x\"></{D}invoke><think>",
                      HF + "deepseek-ai/DeepSeek-V3.2", "deepseekv32", "think"),
    "kimi-k2": ("{% if tools %}<|im_system|>tool_declare<|im_middle|>{{ tools | tojson }}<|im_end|>{% endif %}"
                "<|tool_calls_section_begin|><|tool_call_begin|>", HF + "moonshotai/Kimi-K2-Instruct", "kimi_k2", None),
    "glm-4.7": ("<tool_call>{{ tc.name }}<arg_key>{{ k }}</arg_key><arg_value>{{ v }}</arg_value></tool_call>"
                "<|assistant|><think>", HF + "zai-org/GLM-4.7", "glm45", "think"),
    "mistral": ("{%- if tools %}[AVAILABLE_TOOLS]{{ tools | tojson }}[/AVAILABLE_TOOLS]{% endif %}[TOOL_CALLS]"
                "[THINK]", "https://github.com/mistralai/mistral-common", "mistral", "mistral"),
    "llama3": ("{%- if tools %}<|start_header_id|>ipython<|end_header_id|>{% endif %}<|python_tag|><|eom_id|>",
               HF + "meta-llama/Llama-3.1-8B-Instruct", "llama3", None),
    "llama4": ("{%- if tools %}[func_name1(params_name1=params_value1, params_name2=params_value2...)]{% endif %}"
               "<|header_start|>", HF + "meta-llama/Llama-4-Scout-17B-16E-Instruct", "llama4", None),
    "gpt-oss": ("{%- if tools %}namespace functions {% endif %}<|start|>assistant<|channel|>commentary to=functions.x "
                "<|constrain|>json<|message|>", HF + "openai/gpt-oss-20b", "gpt-oss", "gpt-oss"),
    "functiongemma": ("{% if tools %}<start_function_declaration>declaration:{{ t }}<end_function_declaration>"
                      "{% endif %}<start_function_call>", HF + "google/functiongemma-270m-it", "functiongemma", None),
    "minimax-m2": ('{% if tools %}<minimax:tool_call>\\n<invoke name="tool-name-1">{% endif %}<think>',
                   "https://github.com/MiniMax-AI/MiniMax-M2", "minimax", "think"),
}


def tiny_with_template(tiny: Path, root: Path, name: str, template: str) -> Path:
    """The tiny model's tokenizer (made offline by `shoal model make-tiny`) with the family's template."""
    out = root / name
    out.mkdir()
    for f in ("tokenizer.json", "tokenizer_config.json", "config.json", "generation_config.json"):
        shutil.copy(tiny / f, out / f)
    config = json.loads((out / "tokenizer_config.json").read_text())
    config["chat_template"] = template
    (out / "tokenizer_config.json").write_text(json.dumps(config))
    (out / "chat_template.jinja").write_text(template)
    return out


@pytest.mark.parametrize("family", sorted(TEMPLATES))
def test_a_model_with_the_family_template_picks_its_parsers_with_no_flag(tiny_model: Path, tmp_path: Path,
                                                                          family: str) -> None:
    template, _source, tool, reasoning = TEMPLATES[family]
    tok = Tokenizer.from_dir(tiny_with_template(tiny_model, tmp_path, family, template))
    got_tool, got_reasoning, detected = model_parsers(None, None, tok)
    assert (got_tool, got_reasoning) == (tool, reasoning) and detected is not None and detected.family
    assert model_parsers("mistral", "qwen3", tok)[:2] == ("mistral", "qwen3")  # explicit names win
    assert resolve_parsers("auto", None, tok) == (tool, None)


def test_an_unknown_template_with_tools_warns_and_parses_nothing() -> None:
    got = detect("{% for t in tools %}TOOL {{ t.name }}{% endfor %}", [])
    assert got.tool_parser is None and "does not recognise" in got.warning
    assert detect("{{ messages }}", []).warning == ""


@pytest.mark.parametrize(("tools", "words"), [
    ([{"type": "function", "function": {"name": "f", "parameters": {"type": "array"}}}],
     r"tools\[0\].function.parameters"),
    ([{"type": "function", "function": {"name": "f", "parameters": "x"}}], r"tools\[0\].function.parameters"),
    ([{"type": "function", "function": {"name": "f"}}, {"type": "function", "function": {"name": "f"}}],
     r"tools\[1\].function.name 'f' repeats tools\[0\]"),
    ([{"type": "function", "function": {}}], r"tools\[0\] must be"),
])
def test_bad_tools_are_refused_naming_the_field(tools: list, words: str) -> None:
    with pytest.raises(ValueError, match=words):
        check_tools(tools)


@pytest.mark.parametrize(("tools", "choice", "param", "words"), [
    ([{"type": "function", "function": {"name": "f", "parameters": {"type": "string"}}}], None, "tools",
     r"tools\[0\].function.parameters must be a JSON schema of an object"),
    ([{"type": "function", "function": {"name": "f"}}] * 2, None, "tools", r"tools\[1\].function.name 'f' repeats"),
    ([{"type": "function", "function": {"name": "f"}}], {"type": "function", "function": {"name": "g"}}, "tool_choice",
     "'g', which is not in tools"),
])
def test_the_chat_route_answers_bad_tools_with_a_400_naming_the_field(tools: list, choice: dict | None, param: str,
                                                                      words: str) -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "tools": tools,
            **({"tool_choice": choice} if choice else {})}
    with pytest.raises(BadRequest, match=words) as e:
        plan_chat(msgspec.json.decode(json.dumps(body), type=ChatCompletionRequest), "auto", None)
    assert e.value.param == param
