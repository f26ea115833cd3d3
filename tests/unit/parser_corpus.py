"""Raw model outputs with the parse a correct server returns, per parser family.

Sources (formats learned, no code copied):
- template: the family's official chat template (Hugging Face model repos) rendering an assistant turn
  with tool calls / reasoning: Qwen2.5 and Hermes (`<tool_call>` JSON), Qwen3-Coder (`<function=...>`),
  Llama 3.1/3.2 (JSON with "parameters", `<|python_tag|>`), Llama 4 (pythonic), Mistral v0.3 and v11+
  (`[TOOL_CALLS]`), DeepSeek V3 / V3.1, Kimi K2, GLM-4.5/4.7, gpt-oss (harmony), DeepSeek-R1 and Qwen3 (`<think>`).
- sglang: cases in the spirit of SGLang's test/srt/test_function_call_parser.py and test_reasoning_parser.py
  (several calls in one output, text before calls, truncated calls, markers inside strings).
- vllm: cases in the spirit of vLLM's tests/tool_use and tests/reasoning parser tests (unicode, empty and
  nested arguments).
- shoal: edge cases of our own (malformed regions, whitespace, split positions).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from shared.parsers.tool_formats import ds as _ds

DS_B, DS_E = _ds("tool calls begin"), _ds("tool calls end")
DS_C, DS_S, DS_CE = _ds("tool call begin"), _ds("tool sep"), _ds("tool call end")


def j(obj: object) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(", ", ": "))


@dataclass(frozen=True)
class Case:
    source: str
    tool: str | None
    reasoning: str | None
    raw: str
    content: str = ""
    reasoning_text: str = ""
    calls: list[tuple[str, dict]] = field(default_factory=list)


W = {"city": "Paris", "days": 3}
NESTED = {"q": {"filters": [{"k": "a", "v": [1, 2, {"deep": None}]}], "flag": True}, "n": -1.5e3}
UNI = {"text": "héllo wörld 日本語 🚀", "emoji": "👩‍💻"}
MARKERS_IN_STR = {"note": "</tool_call> and <tool_call> and [TOOL_CALLS] and ; and ]"}

CASES: list[Case] = [
    # ---- qwen25 / hermes --------------------------------------------------------------------
    Case("template", "qwen25", None, f'<tool_call>\n{{"name": "get_weather", "arguments": {j(W)}}}\n</tool_call>',
         calls=[("get_weather", W)]),
    Case("sglang", "qwen25", None, f'Let me check.\n<tool_call>\n{{"name": "a", "arguments": {j(W)}}}\n</tool_call>'
         f'\n<tool_call>\n{{"name": "b", "arguments": {{}}}}\n</tool_call>',
         content="Let me check.", calls=[("a", W), ("b", {})]),
    Case("vllm", "hermes", None, f'<tool_call>{{"name": "u", "arguments": {j(UNI)}}}</tool_call>', calls=[("u", UNI)]),
    Case("shoal", "qwen25", None, f'<tool_call>\n{{"name": "m", "arguments": {j(MARKERS_IN_STR)}}}\n</tool_call>',
         calls=[("m", MARKERS_IN_STR)]),
    Case("vllm", "qwen25", None, f'<tool_call>\n{{"name": "n", "arguments": {j(NESTED)}}}\n</tool_call>',
         calls=[("n", NESTED)]),
    Case("sglang", "qwen25", None, '<tool_call>\n{"name": "cut", "arguments": {"city": "Pa',  # truncated: closed
         calls=[("cut", {"city": "Pa"})]),
    Case("shoal", "qwen25", None, "<tool_call>not json</tool_call> after",  # malformed: ends as text
         content="<tool_call>not json</tool_call> after"),
    Case("shoal", "qwen25", None, '<tool_call>{"name": "x", "arguments": {}} junk <tool_call>{"name": "y", '
         '"arguments": {}}</tool_call>', content=' junk', calls=[("x", {}), ("y", {})]),
    Case("shoal", "qwen25", None, "plain answer with < and <tool but no call", content="plain answer with < and "
         "<tool but no call"),
    Case("shoal", "qwen25", None, "trailing spaces stay when no call   ",
         content="trailing spaces stay when no call   "),
    # ---- llama3 ---------------------------------------------------------------------------------
    Case("template", "llama3", None, f'{{"name": "get_weather", "parameters": {j(W)}}}', calls=[("get_weather", W)]),
    Case("template", "llama3", None, f'<|python_tag|>{{"name": "s", "parameters": {j(UNI)}}}', calls=[("s", UNI)]),
    Case("sglang", "llama3", None, f'{{"name": "a", "parameters": {j(W)}}}; {{"name": "b", "parameters": {{}}}}',
         calls=[("a", W), ("b", {})]),
    Case("shoal", "llama3", None, f'{{"name": "m", "parameters": {j(MARKERS_IN_STR)}}}', calls=[("m", MARKERS_IN_STR)]),
    Case("sglang", "llama3", None, 'Sure. {"name": "x", "parameters": {"a": [1', content='Sure.',
         calls=[("x", {"a": [1]})]),
    # ---- mistral --------------------------------------------------------------------------------
    Case("template", "mistral", None, f'[TOOL_CALLS][{{"name": "get_weather", "arguments": {j(W)}}}]',
         calls=[("get_weather", W)]),
    Case("sglang", "mistral", None, f'[TOOL_CALLS] [{{"name": "a", "arguments": {j(NESTED)}}}, '
         f'{{"name": "b", "arguments": {{}}}}]', calls=[("a", NESTED), ("b", {})]),
    Case("template", "mistral", None, f'[TOOL_CALLS]get_weather[ARGS]{j(W)}[TOOL_CALLS]u[ARGS]{j(UNI)}',
         calls=[("get_weather", W), ("u", UNI)]),
    Case("shoal", "mistral", None, f'Text first [TOOL_CALLS][{{"name": "m", "arguments": {j(MARKERS_IN_STR)}}}]',
         content="Text first", calls=[("m", MARKERS_IN_STR)]),
    Case("sglang", "mistral", None, '[TOOL_CALLS][{"name": "cut", "argu'),  # cut before the name's end: dropped
    # ---- pythonic (llama 4) -----------------------------------------------------------------------
    Case("template", "pythonic", None, '[get_weather(city="Paris", days=3), noop()]',
         calls=[("get_weather", W), ("noop", {})]),
    Case("vllm", "pythonic", None, "[f(text='héllo ] 日本', n={'a': [1, None, True]})]",
         calls=[("f", {"text": "héllo ] 日本", "n": {"a": [1, None, True]}})]),
    Case("template", "pythonic", None, '<|python_start|>[g(x=1)]<|python_end|>', calls=[("g", {"x": 1})]),
    Case("shoal", "pythonic", None, "Answer: [not a call]", content="Answer: [not a call]"),
    Case("shoal", "pythonic", None, "[broken(", content="[broken("),
    # ---- qwen3_coder --------------------------------------------------------------------------------
    Case("template", "qwen3_coder", None, "<tool_call>\n<function=get_weather>\n<parameter=city>\nParis\n"
         "</parameter>\n<parameter=days>\n3\n</parameter>\n</function>\n</tool_call>", calls=[("get_weather", W)]),
    Case("sglang", "qwen3_coder", None, "Checking.\n<tool_call>\n<function=u>\n<parameter=text>\nhéllo wörld 日本語 🚀"
         "\n</parameter>\n<parameter=emoji>\n👩‍💻\n</parameter>\n</function>\n</tool_call>\n<tool_call>\n"
         "<function=noop>\n</function>\n</tool_call>", content="Checking.", calls=[("u", UNI), ("noop", {})]),
    # ---- deepseek v3 / v3.1 ---------------------------------------------------------------------------
    Case("template", "deepseekv3", None, f"{DS_B}{DS_C}function{DS_S}get_weather\n```json\n{j(W)}\n```{DS_CE}"
         f"{DS_C}function{DS_S}n\n```json\n{j(NESTED)}\n```{DS_CE}{DS_E}", calls=[("get_weather", W), ("n", NESTED)]),
    Case("template", "deepseekv31", None, f"Sure.{DS_B}{DS_C}get_weather{DS_S}{j(W)}{DS_CE}{DS_C}u{DS_S}{j(UNI)}"
         f"{DS_CE}{DS_E}", content="Sure.", calls=[("get_weather", W), ("u", UNI)]),
    Case("sglang", "deepseekv31", None, f"{DS_B}{DS_C}cut{DS_S}{{\"a\": 1", calls=[("cut", {"a": 1})]),
    # ---- kimi k2 ----------------------------------------------------------------------------------------
    Case("template", "kimi_k2", None, "<|tool_calls_section_begin|><|tool_call_begin|>functions.get_weather:0"
         f"<|tool_call_argument_begin|>{j(W)}<|tool_call_end|><|tool_call_begin|>functions.m:1"
         f"<|tool_call_argument_begin|>{j(MARKERS_IN_STR)}<|tool_call_end|><|tool_calls_section_end|>",
         calls=[("get_weather", W), ("m", MARKERS_IN_STR)]),
    # ---- glm45 / glm47 --------------------------------------------------------------------------------
    Case("template", "glm45", None, "<tool_call>get_weather\n<arg_key>city</arg_key>\n<arg_value>Paris</arg_value>\n"
         "<arg_key>days</arg_key>\n<arg_value>3</arg_value>\n</tool_call>", calls=[("get_weather", W)]),
    Case("template", "glm47", None, "<tool_call>u<arg_key>text</arg_key><arg_value>héllo wörld 日本語 🚀</arg_value>"
         "<arg_key>emoji</arg_key><arg_value>👩‍💻</arg_value></tool_call>", calls=[("u", UNI)]),
    # ---- gpt-oss (harmony) -------------------------------------------------------------------------------
    Case("template", "gpt-oss", "gpt-oss", "<|channel|>analysis<|message|>Need the weather.<|end|><|start|>assistant"
         f"<|channel|>commentary to=functions.get_weather <|constrain|>json<|message|>{j(W)}<|call|>",
         reasoning_text="Need the weather.", calls=[("get_weather", W)]),
    Case("shoal", "gpt-oss", "gpt-oss", f"<|channel|>commentary to=functions.u <|constrain|>json<|message|>{j(UNI)}",
         calls=[("u", UNI)]),  # <|call|> is an end-of-sequence token: the detokenizer drops it
    # ---- reasoning ---------------------------------------------------------------------------------------
    Case("template", None, "deepseek-r1", "Think hard.\n</think>\n\nThe answer is 4.", content="The answer is 4.",
         reasoning_text="Think hard."),
    Case("sglang", None, "deepseek-r1", "<think>Also with the tag.</think>Yes.", content="Yes.",
         reasoning_text="Also with the tag."),
    Case("template", None, "qwen3", "<think>\nhmm 日本\n</think>\n\nDone.", content="Done.",
         reasoning_text="hmm 日本"),
    Case("sglang", None, "qwen3", "No thinking here.", content="No thinking here."),
    Case("sglang", None, "qwen3", "<think>cut short", reasoning_text="cut short"),
    Case("template", None, "kimi", "◁think▷plan◁/think▷ok", content="ok", reasoning_text="plan"),
    Case("template", "qwen25", "qwen3", "<think>\nI should call it.\n</think>\n\n<tool_call>\n"
         "{\"name\": \"get_weather\", "
         f"\"arguments\": {j(W)}}}\n</tool_call>", reasoning_text="I should call it.", calls=[("get_weather", W)]),
    Case("template", "glm45", "glm45", "<think>x</think><tool_call>noop\n</tool_call>", reasoning_text="x",
         calls=[("noop", {})]),
]
