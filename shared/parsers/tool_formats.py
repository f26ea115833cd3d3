"""Tool-call syntaxes by `--tool-call-parser` name (SGLang's names, plus aliases); formats from each family's
chat template."""

from __future__ import annotations

import ast
import json
from typing import Any

import regex

from shared.parsers.gemma import FunctionGemma
from shared.parsers.json_calls import DeepSeek, HermesJson, KimiK2, Llama3, Mistral, ds
from shared.parsers.output import Call, Malformed, Scan, ToolFormat
from shared.parsers.typed import arg_item
from shared.parsers.xml_calls import DeepSeekDsml, DeepSeekDsmlAscii, Glm, MiniMax, QwenXml

__all__ = ["TOOL_PARSERS", "ds", "tool_format"]


class Qwen(ToolFormat):
    """Qwen 2.5 / Qwen3 (`<tool_call>` JSON, as Hermes) and Qwen3-Coder / Qwen3.5 (`<tool_call><function=...>`
    XML, with or without the opener): the region's first markup tells which."""

    starts = ("<tool_call>", "<function=")

    def __init__(self, tools: list[dict[str, Any]]) -> None:
        self.json, self.xml = HermesJson(tools), QwenXml(tools)
        self.chosen: ToolFormat | None = None

    def reset(self) -> None:
        self.json.reset()
        self.xml.reset()
        self.chosen = None

    def quiet(self, text: str) -> bool:
        return self.chosen is not None and self.chosen.quiet(text)

    def scan(self, region: str, final: bool) -> Scan:
        if self.chosen is None:
            body = region[len("<tool_call>") :].lstrip() if region.startswith("<tool_call>") else "<function="
            if body.startswith("{"):
                self.chosen = self.json
            elif body.startswith("<function="):
                self.chosen = self.xml
            elif "<function=".startswith(body) and not final:
                return Scan([], None)
            elif final and ("<function=".startswith(body) or not body):  # cut right after the opener
                raise Malformed(len(region), cut=True)
            else:
                raise Malformed(len("<tool_call>"))
        return self.chosen.scan(region, final)


class Either(ToolFormat):
    """Several forms of one family, chosen by the marker the region begins with."""

    forms_of: tuple[type[ToolFormat], ...] = ()

    def __init__(self, tools: list[dict[str, Any]]) -> None:
        self.forms: list[ToolFormat] = [f(tools) for f in self.forms_of]  # type: ignore[call-arg]
        self.starts = tuple(s for f in self.forms for s in f.starts)
        self.at_start_only = tuple(s for f in self.forms for s in f.at_start_only)
        self.chosen: ToolFormat = self.forms[0]
        self.picked = False

    def reset(self) -> None:
        for f in self.forms:
            f.reset()
        self.picked = False

    def quiet(self, text: str) -> bool:
        return self.picked and self.chosen.quiet(text)

    def scan(self, region: str, final: bool) -> Scan:
        if not self.picked:
            self.chosen = next((f for f in self.forms if region.startswith(f.starts)), None) or next(
                f for f in self.forms if region.startswith(f.at_start_only))
            self.picked = True
        return self.chosen.scan(region, final)


class DeepSeekAll(Either):
    """Every DeepSeek form: V3 / V3.1 markers and V3.2+ DSML."""

    forms_of = (DeepSeek, DeepSeekDsml, DeepSeekDsmlAscii)


class Dsml(Either):
    """DSML with fullwidth or ASCII bars."""

    forms_of = (DeepSeekDsml, DeepSeekDsmlAscii)


class Pythonic(ToolFormat):
    """Pythonic (Llama 4 and others): `[get_weather(city="Paris"), f()]` at the start of the output, optionally
    in `<|python_start|>` ... `<|python_end|>`. The calls come whole, when the list closes."""

    starts = ("<|python_start|>", "[")  # a bare list also after text (as SGLang reads Llama 4), if it is calls

    def __init__(self, tools: list[dict[str, Any]]) -> None:
        pass

    def scan(self, region: str, final: bool) -> Scan:
        lead = len(self.starts[0]) if region.startswith(self.starts[0]) else 0
        if not lead:  # `[name(`, else the bracket is text (a markdown link, a list in prose)
            head = _CALL_HEAD.match(region, partial=True)
            if head is None or (head.partial and final):
                raise Malformed(1 if head is None else len(region))
            if head.partial:
                return Scan([], None)
        end = region.find("]", lead)
        while end >= 0:
            calls = _pythonic(region[lead : end + 1])
            if calls is None and not lead and _expression(region[: end + 1]):
                raise Malformed(1)  # a whole bracket that is no list of calls (`[f(x) for x in y]`): text
            if calls is not None:
                used = end + 1
                tail = region[used:]
                if lead and tail.lstrip().startswith("<|python_end|>"):
                    used += len(tail) - len(tail.lstrip()) + len("<|python_end|>")
                elif lead and not final and "<|python_end|>".startswith(tail.lstrip()):
                    return Scan([], None)
                return Scan(calls, used)
            end = region.find("]", end + 1)
        if final:
            raise Malformed(len(region))
        return Scan([], None)


_CALL_HEAD = regex.compile(r"\[\s*[A-Za-z_][\w.]*\s*\(")


def _pythonic(text: str) -> list[Call] | None:
    """`[f(a=1), g()]` -> calls; None when it is not (yet) a list of calls with literal keyword arguments."""
    text = text.strip()
    try:
        tree = ast.parse(text, mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None
    if not isinstance(tree.body, ast.List):
        return None
    calls = []
    for node in tree.body.elts:
        if not isinstance(node, ast.Call) or node.args:
            return None
        try:
            items = [arg_item(kw.arg, _literal(text, kw.value)) for kw in node.keywords if kw.arg is not None]
        except (ValueError, TypeError, SyntaxError, RecursionError):
            return None
        calls.append(Call(ast.unparse(node.func), "{" + ", ".join(items) + "}"))
    return calls or None


def _expression(text: str) -> bool:
    """Whether `text` is a whole Python expression (else its `]` may sit inside a string still open)."""
    try:
        ast.parse(text.strip(), mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return False
    return True


def _literal(text: str, node: ast.expr) -> Any:
    """A keyword argument's value: JSON where its text is JSON (true / false / null, JSON string escapes, as
    forced-call grammars and some models write), else a Python literal."""
    try:
        return json.loads(ast.get_source_segment(text, node) or "")
    except ValueError:
        return ast.literal_eval(node)


class Llama(Either):
    """Llama 3 / 4: pythonic calls at the start of the output, or JSON calls (either template's form)."""

    forms_of = (Pythonic, Llama3)


class GptOss(ToolFormat):
    """gpt-oss (harmony): parsed by shared.parsers.harmony, which reads the whole output's channels."""

    def __init__(self, tools: list[dict[str, Any]]) -> None:
        self.tools = tools


TOOL_PARSERS: dict[str, type[ToolFormat]] = {
    "hermes": Qwen, "qwen25": Qwen, "qwen": Qwen, "qwen3": Qwen, "qwen3_coder": Qwen, "qwen3_xml": Qwen,
    "llama3": Llama, "llama": Llama, "llama3_json": Llama3,
    "mistral": Mistral,
    "pythonic": Pythonic, "llama4": Llama,
    "deepseekv3": DeepSeek, "deepseekv31": DeepSeek,
    "deepseekv32": DeepSeekAll, "dsml": Dsml, "deepseek": DeepSeekAll,
    "kimi_k2": KimiK2, "kimi": KimiK2,
    "glm45": Glm, "glm47": Glm, "glm": Glm,
    "gpt-oss": GptOss, "harmony": GptOss,
    "minimax": MiniMax, "minimax-m2": MiniMax,
    "functiongemma": FunctionGemma, "gemma": FunctionGemma,
}


def tool_format(name: str, tools: list[dict[str, Any]]) -> ToolFormat:
    """The format named `name` (SGLang's --tool-call-parser), knowing the request's tools (XML formats type their
    values by the tools' schemas). KeyError for an unknown name."""
    if name not in TOOL_PARSERS:
        raise KeyError(f"unknown tool-call parser {name!r} (one of {', '.join(sorted(TOOL_PARSERS))})")
    return TOOL_PARSERS[name](tools)  # type: ignore[call-arg]


