"""Agents on the chat route: structured output, tools and reasoning (the request side and the output side).

    plan = plan_chat(body, tool_parser, reasoning_parser)   # validates; BadRequest (400) says why
    await plan.check(tokenizer)                  # the grammar compiles (in a thread), or 400
    prepare(..., grammar=plan.grammar)           # the EngineRequest is built once, with its grammar
    parser = plan.new_parser()                   # per choice: content, reasoning_content, tool_calls

Parsing happens here, in the frontend, with the parser names the worker published
in its model card (`--tool-call-parser`, `--reasoning-parser`) or the frontend's own
flags, which win.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec

from protocol.messages import EngineRequest, Grammar
from services.frontend.openai_types import (
    ChatCompletionRequest,
    Delta,
    FunctionCall,
    ResponseMessage,
    ToolCall,
    ToolCallDelta,
)
from shared.errors import BadRequest
from shared.grammar import GrammarCache, GrammarError
from shared.grammar.pool import run_compile
from shared.grammar.schema import fix_schema
from shared.grammar.tools import forced_tool_grammar
from shared.parsers import OutputParser, join_calls, make_parser
from shared.parsers.validate import check_tools
from shared.tokenizer import IncrementalDetokenizer, Tokenizer

RESPONSE_FORMATS = ("text", "json_object", "json_schema")


@dataclass(frozen=True)
class AgentPlan:
    grammar: Grammar | None = None
    tools: list[dict[str, Any]] = field(default_factory=list)
    tool_parser: str | None = None  # set when tool calls are parsed from the output
    reasoning_parser: str | None = None
    prompt: str | None = None  # the rendered prompt: the output starts inside a reasoning block it opened

    @property
    def parses(self) -> bool:
        return self.tool_parser is not None or self.reasoning_parser is not None

    def new_parser(self, prompt: str | None = None) -> OutputParser | None:
        """One choice's parser; `prompt` (else the plan's): the rendered prompt, which may open a reasoning block."""
        forced = self.grammar is not None and self.grammar.kind == "structural_tag"  # calls from the first token
        return make_parser(self.tool_parser, self.reasoning_parser, self.tools,
                           "" if forced else (self.prompt if prompt is None else prompt))

    async def check(self, tok: Tokenizer) -> None:
        """Compile the grammar with the model's tokenizer (cached): a grammar that cannot compile is a 400."""
        if self.grammar is None:
            return
        try:
            await run_compile(lambda: GrammarCache.for_tokenizer(tok).compile(self.grammar))  # own pool, deadline
        except GrammarError as e:
            raise BadRequest(str(e), _PARAM.get(self.grammar.kind, "response_format")) from e

    def apply(self, request: EngineRequest) -> EngineRequest:
        return request if self.grammar is None else msgspec.structs.replace(request, grammar=self.grammar)


_PARAM = {"regex": "regex", "ebnf": "ebnf", "structural_tag": "tool_choice"}


_PLAIN: dict[str | None, AgentPlan] = {}  # no tools, no grammar: one plan per reasoning parser, made once


def plan_chat(req: ChatCompletionRequest, tool_parser: str | None, reasoning_parser: str | None) -> AgentPlan:
    """What the request asks of its output; the parser names are the model's (or the frontend's override)."""
    if req.tools is None and req.tool_choice is None and req.response_format is None \
            and not (req.regex or req.ebnf or req.choice):
        reasoning = reasoning_parser if (req.chat_template_kwargs or {}).get("enable_thinking", True) is not False \
            else None
        plan = _PLAIN.get(reasoning)
        if plan is None:
            plan = _PLAIN[reasoning] = AgentPlan(reasoning_parser=reasoning)
        return plan
    tools = _tools(req.tools)
    choice = _tool_choice(req.tool_choice, tools)
    grammars = [g for g in (_response_format(req.response_format), _extra_grammar(req)) if g is not None]
    if choice == "required" or isinstance(choice, dict):
        if tool_parser is None:
            raise BadRequest("tool_choice required or a named function needs a tool-call parser: start the worker "
                             "(or the frontend) with --tool-call-parser", "tool_choice")
        name = choice["function"]["name"] if isinstance(choice, dict) else None
        try:
            grammars.append(forced_tool_grammar(tool_parser, tools, name, req.parallel_tool_calls))
        except ValueError as e:
            raise BadRequest(str(e), "tool_choice") from e
    if len(grammars) > 1:
        raise BadRequest("use only one of response_format (json), regex, ebnf, choice and a forced tool_choice",
                         "response_format")
    thinking = (req.chat_template_kwargs or {}).get("enable_thinking", True) is not False
    return AgentPlan(grammar=grammars[0] if grammars else None, tools=tools,
                     tool_parser=tool_parser if tools and choice != "none" else None,
                     reasoning_parser=reasoning_parser if thinking else None)


def _tools(tools: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    try:
        return check_tools(tools)
    except ValueError as e:
        raise BadRequest(str(e), "tools") from e


def _tool_choice(choice: str | dict[str, Any] | None, tools: list[dict[str, Any]]) -> str | dict[str, Any]:
    if choice is None:
        return "auto" if tools else "none"
    if isinstance(choice, str):
        if choice not in ("none", "auto", "required"):
            raise BadRequest(f"tool_choice must be none, auto, required or a function, not {choice!r}", "tool_choice")
        if choice == "required" and not tools:
            raise BadRequest("tool_choice required needs tools", "tool_choice")
        return choice
    fn = choice.get("function") if choice.get("type") == "function" else None
    name = fn.get("name") if isinstance(fn, dict) else None
    if not isinstance(name, str):
        raise BadRequest("tool_choice must be {'type': 'function', 'function': {'name': ...}}", "tool_choice")
    if name not in {t["function"]["name"] for t in tools}:
        raise BadRequest(f"tool_choice names function {name!r}, which is not in tools", "tool_choice")
    return choice


def _response_format(fmt: dict[str, Any] | None) -> Grammar | None:
    kind = (fmt or {}).get("type", "text")
    if kind not in RESPONSE_FORMATS:
        raise BadRequest(f"response_format.type must be one of {', '.join(RESPONSE_FORMATS)}", "response_format")
    if kind == "json_object":
        return Grammar("json_object")
    if kind == "json_schema":
        spec = (fmt or {}).get("json_schema")
        schema = spec.get("schema") if isinstance(spec, dict) else None
        if not isinstance(schema, dict):
            raise BadRequest("response_format json_schema needs json_schema.schema (an object)", "response_format")
        try:
            return Grammar("json_schema", json.dumps(fix_schema(schema), ensure_ascii=False))
        except ValueError as e:  # a malformed keyword (minLength: "abc"); the message names it
            raise BadRequest(f"response_format json_schema: {e}", "response_format") from e
    return None


def _extra_grammar(req: ChatCompletionRequest) -> Grammar | None:
    given = [g for g in (req.regex and Grammar("regex", req.regex), req.ebnf and Grammar("ebnf", req.ebnf),
                         req.choice and Grammar("ebnf", _choice_ebnf(req.choice))) if g]
    if len(given) > 1:
        raise BadRequest("use only one of regex, ebnf and choice", "regex")
    return given[0] if given else None


def _choice_ebnf(choices: list[str]) -> str:
    """Exactly one of the strings (JSON string escapes are EBNF string escapes)."""
    return "root ::= " + " | ".join(json.dumps(c, ensure_ascii=False) for c in choices)


class MarkerDetokenizer(IncrementalDetokenizer):
    """Keeps special tokens (many formats' markers are special tokens) but the end-of-sequence ones."""

    def __init__(self, tok: Tokenizer) -> None:
        super().__init__(tok, skip_special_tokens=False)
        self.drop = frozenset(tok.eos_token_ids)

    def add(self, token_ids: Sequence[int]) -> str:
        return super().add([t for t in token_ids if t not in self.drop])


def tool_call_id() -> str:
    return f"call_{secrets.token_hex(12)}"


# ---- the output side ------------------------------------------------------------------------
def message_of(parser: OutputParser, text: str) -> tuple[ResponseMessage, bool]:
    """A whole response's message from its text, and whether it holds tool calls."""
    out = parser.parse(text)
    calls = [ToolCall(tool_call_id(), FunctionCall(c.name, c.arguments)) for c in join_calls(out.calls)]
    msg = ResponseMessage("assistant", out.content or (None if calls else ""), out.reasoning or None, calls or None)
    return msg, bool(calls)


class StreamedCalls:
    """One choice's stream through its parser: each delta's content, reasoning and tool calls. A call's first
    delta carries its index, a new id, the type and the name; the next ones fragments of its arguments."""

    def __init__(self, parser: OutputParser) -> None:
        self.parser = parser
        self.calls = 0  # calls begun so far

    def delta(self, text: str, final: bool) -> Delta:
        out = self.parser.feed(text)
        if final:
            out.add(self.parser.finish())
        calls = []
        for c in out.calls:
            if c.name is not None:
                self.calls = max(self.calls, c.index + 1)
                calls.append(ToolCallDelta(c.index, tool_call_id(), "function", FunctionCall(c.name, c.arguments)))
            elif calls and calls[-1].index == c.index and calls[-1].function is not None:  # one delta per call
                f = calls[-1].function
                calls[-1] = msgspec.structs.replace(calls[-1], function=FunctionCall(
                    f.name, (f.arguments or "") + c.arguments))
            else:
                calls.append(ToolCallDelta(c.index, function=FunctionCall(arguments=c.arguments)))
        return Delta(content=out.content or None, reasoning_content=out.reasoning or None, tool_calls=calls or None)


def finish_reason(reason: str | None, had_calls: bool) -> str | None:
    """OpenAI's "tool_calls" when the output ended (not cut) after tool calls."""
    return "tool_calls" if reason == "stop" and had_calls else reason
