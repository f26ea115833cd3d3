"""Steps -> OpenAI chat completions (a whole `chat.completion` or `chat.completion.chunk` events)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import msgspec

from protocol.messages import Usage
from services.frontend.http_errors import json_encoder, openai_error, sse_event
from services.frontend.openai_types import (
    ChatChoice,
    ChatChunkChoice,
    ChatCompletion,
    ChatCompletionChunk,
    ChatLogprobContent,
    ChatLogprobs,
    ChatLogprobTop,
    Delta,
    FunctionCall,
    PromptTokensDetails,
    ResponseMessage,
    ToolCall,
    ToolCallDelta,
    UsageInfo,
)
from services.frontend.pipeline import Job
from services.frontend.render import Message, openai_sse
from services.frontend.steps import (
    ErrorStep,
    FinishStep,
    Frame,
    LogprobsStep,
    ReasoningStep,
    TextStep,
    TokenLogprob,
    ToolCallStep,
    UsageStep,
)
from shared.http import Response


def usage_info(u: Usage) -> UsageInfo:
    return UsageInfo(u.prompt_tokens, u.completion_tokens, u.prompt_tokens + u.completion_tokens,
                     PromptTokensDetails(cached_tokens=u.cached_tokens))


def chat_logprobs(tokens: list[TokenLogprob]) -> ChatLogprobs:
    return ChatLogprobs([ChatLogprobContent(t.token, t.logprob, list(t.bytes),
                                            [ChatLogprobTop(a.token, a.logprob, list(a.bytes)) for a in t.top])
                         for t in tokens])


def finish_reason(step: FinishStep, had_calls: bool) -> str:
    """OpenAI's "tool_calls" when the output ended (not cut) after tool calls."""
    return "tool_calls" if step.reason == "stop" and had_calls else step.reason


_CHUNK_TAIL = b',"logprobs":null}],"object":"chat.completion.chunk","usage":null}\n\n'
_ROLE = b'"role":"assistant"'


class ChatRenderer:
    __slots__ = ("_head", "created", "ended", "include_usage", "model", "parses", "rid")

    def __init__(self, job: Job) -> None:
        self.rid, self.model, self.created = job.request_id, job.model.name, int(time.time())
        self.include_usage = job.prepared.include_usage
        self.parses = job.plan is not None and job.plan.parses
        self.ended = False  # the last chunk rendered finished its choice
        # a text chunk's bytes up to its choice's index, encoded once (what ChatCompletionChunk encodes to)
        self._head = b'data: {"id":%b,"created":%d,"model":%b,"choices":[{"index":' % (
            json_encoder.encode(self.rid), self.created, json_encoder.encode(self.model))

    def error(self, step: ErrorStep) -> Response:
        return openai_error(step)

    async def whole(self, frames: AsyncIterator[Frame]) -> Response:
        messages: dict[int, Message] = {}
        logprobs: dict[int, list[TokenLogprob]] = {}
        finish: dict[int, FinishStep] = {}
        usage = Usage()
        async for frame in frames:
            for step in frame:
                if isinstance(step, ErrorStep):
                    return openai_error(step)
                if isinstance(step, UsageStep):
                    usage = step.usage if not step.running else usage
                elif isinstance(step, LogprobsStep):
                    logprobs.setdefault(step.choice, []).extend(step.tokens)
                elif isinstance(step, FinishStep):
                    finish[step.choice] = step
                else:
                    messages.setdefault(step.choice, Message()).add(step)
        choices = []
        for i in sorted(set(messages) | set(finish)):
            m = messages.get(i, Message())
            calls = [ToolCall(c.id, FunctionCall(c.name, c.arguments)) for _, c in sorted(m.calls.items())]
            msg = ResponseMessage("assistant", m.text or (None if calls else ""), m.reasoning or None, calls or None)
            reason = finish_reason(finish[i], bool(calls)) if i in finish else None
            choices.append(ChatChoice(i, msg, reason, chat_logprobs(logprobs[i]) if i in logprobs else None))
        return Response(200, json_encoder.encode(ChatCompletion(self.rid, self.created, self.model, choices,
                                                                usage_info(usage))))

    def stream(self, frames: AsyncIterator[Frame]) -> AsyncIterator[bytes]:
        role_sent: set[int] = set()
        calls: set[tuple[int, int]] = set()

        def chunk(frame: Frame) -> tuple[bytes, bool]:
            return self._chunk(frame, frame[0].choice, role_sent, calls), self.ended

        def usage_event(usage: Usage) -> bytes:
            return sse_event(ChatCompletionChunk(self.rid, self.created, self.model, [], usage=usage_info(usage)))

        return openai_sse(frames, chunk, usage_event if self.include_usage else None)

    def _chunk(self, frame: Frame, choice: int, role_sent: set[int], calls: set[tuple[int, int]]) -> bytes:
        """One frame's chunk: text (and the finish) from pre-encoded parts, anything else through the structs."""
        content = ""
        reason: str | None = None
        for step in frame:
            kind = type(step)
            if kind is TextStep:
                content += step.text  # type: ignore[union-attr]
            elif kind is FinishStep:
                reason = finish_reason(step, any(c == choice for c, _ in calls))  # type: ignore[arg-type]
            else:
                return self._struct_chunk(frame, choice, role_sent, calls)
        self.ended = reason is not None
        if not (content or reason):
            return b""
        delta = [_ROLE] if choice not in role_sent else []
        role_sent.add(choice)
        if content or not self.parses:
            delta.append(b'"content":' + json_encoder.encode(content))
        return b"%b%d,\"delta\":{%b},\"finish_reason\":%b%b" % (
            self._head, choice, b",".join(delta), b"null" if reason is None else json_encoder.encode(reason),
            _CHUNK_TAIL)

    def _struct_chunk(self, frame: Frame, choice: int, role_sent: set[int], calls: set[tuple[int, int]]) -> bytes:
        content = reasoning = ""
        deltas: list[ToolCallDelta] = []
        tokens: list[TokenLogprob] = []
        reason: str | None = None
        usage: UsageInfo | None = None
        for step in frame:
            if isinstance(step, TextStep):
                content += step.text
            elif isinstance(step, ReasoningStep):
                reasoning += step.text
            elif isinstance(step, ToolCallStep):
                calls.add((choice, step.index))
                fn = FunctionCall(step.name, step.arguments_fragment)
                deltas.append(ToolCallDelta(step.index, step.id, "function" if step.id else None, fn))
            elif isinstance(step, LogprobsStep):
                tokens.extend(step.tokens)
            elif isinstance(step, FinishStep):
                reason = finish_reason(step, any(c == choice for c, _ in calls))
            elif isinstance(step, UsageStep):
                usage = usage_info(step.usage)
        self.ended = reason is not None
        if not (content or reasoning or deltas or tokens or reason):
            return b""
        delta = Delta(content=content or (None if self.parses else ""), reasoning_content=reasoning or None,
                      tool_calls=deltas or None)
        if choice not in role_sent:
            role_sent.add(choice)
            delta = msgspec.structs.replace(delta, role="assistant")
        return sse_event(ChatCompletionChunk(self.rid, self.created, self.model, [ChatChunkChoice(
            choice, delta, reason, chat_logprobs(tokens) if tokens else None)], usage=usage))
