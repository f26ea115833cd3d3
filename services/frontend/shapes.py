"""The OpenAI shapes of generated output, for one choice or several (services.frontend.choices).

    state = new_state(model, prepared)          # one per choice
    chunks = ChoiceChunks(chat, rid, created, model.name, index, state)
    event = chunks.event(state.feed(items))     # b"" when the step has nothing to send
    body = whole_response(chat, rid, created, model.name, [(text, merged, state), ...], usage)
"""

from __future__ import annotations

import msgspec

from services.frontend.agents import MarkerDetokenizer, StreamedCalls, finish_reason, message_of
from services.frontend.models import ModelEntry
from services.frontend.openai_types import (
    ChatChoice,
    ChatChunkChoice,
    ChatCompletion,
    ChatCompletionChunk,
    Completion,
    CompletionChoice,
    Delta,
    ResponseMessage,
    UsageInfo,
)
from services.frontend.postprocess import OutputState, Step
from services.frontend.preprocess import Prepared
from services.frontend.responses import json_encoder, sse_event


def new_state(model: ModelEntry, p: Prepared) -> OutputState:
    """Detokenizer, stop strings and token counts of one choice (and its tool-call / reasoning parser)."""
    state = OutputState(model.tokenizer, p.prompt_tokens or len(p.request.token_ids), p.stops,
                        p.logprobs is not None, p.echo, p.continuous_usage)
    if p.request.output.prompt_logprobs is not None:  # echo with logprobs
        state.prompt = (list(p.request.token_ids), p.request.output.prompt_logprobs)
    if p.agent is not None and p.agent.parses:
        state.parser = p.agent.new_parser()
        state.detok = MarkerDetokenizer(model.tokenizer)
    return state


class ChoiceChunks:
    """One choice's SSE events: the role goes on its first chat delta; completion logprobs count text offsets."""

    def __init__(self, chat: bool, rid: str, created: int, model: str, index: int, state: OutputState) -> None:
        self.chat, self.rid, self.created, self.model, self.index, self.state = chat, rid, created, model, index, state
        self.role_sent = False
        self.offset = 0
        self.calls = StreamedCalls(state.parser) if chat and state.parser is not None else None

    def event(self, step: Step) -> bytes:
        st = self.state
        if not (step.text or step.finish_reason or (st.want_logprobs and step.logprobs)):
            return b""
        chunk: msgspec.Struct
        usage = st.usage() if st.continuous_usage else None
        if self.chat:
            delta, reason = Delta(content=step.text), step.finish_reason
            if self.calls is not None:
                delta = self.calls.delta(step.text, step.finish_reason is not None)
                reason = finish_reason(reason, self.calls.calls > 0)
                if delta == Delta() and not reason and not (st.want_logprobs and step.logprobs):
                    return b""
            if not self.role_sent:
                delta = msgspec.structs.replace(delta, role="assistant")
            self.role_sent = True
            chunk = ChatCompletionChunk(self.rid, self.created, self.model, [ChatChunkChoice(
                self.index, delta, reason, st.chat_logprobs(step))], usage=usage)
        else:
            chunk = Completion(self.rid, self.created, self.model, [CompletionChoice(
                self.index, step.text, step.finish_reason, st.completion_logprobs(step, self.offset))], usage)
            self.offset += len(step.text)
        return sse_event(chunk)


def _chat_choice(index: int, text: str, merged: Step, st: OutputState) -> ChatChoice:
    if st.parser is None:
        return ChatChoice(index, ResponseMessage("assistant", text), st.finish_reason, st.chat_logprobs(merged))
    message, had_calls = message_of(st.parser, text)
    return ChatChoice(index, message, finish_reason(st.finish_reason, had_calls), st.chat_logprobs(merged))


def usage_event(chat: bool, rid: str, created: int, model: str, usage: UsageInfo) -> bytes:
    """The closing chunk with no choices and the usage (stream_options.include_usage)."""
    return sse_event(ChatCompletionChunk(rid, created, model, [], usage=usage) if chat
                     else Completion(rid, created, model, [], usage=usage))


def whole_response(chat: bool, rid: str, created: int, model: str,
                   choices: list[tuple[str, Step, OutputState]], usage: UsageInfo) -> bytes:
    """A non-streamed completion: each choice's text, finish reason and logprobs (from its merged steps)."""
    resp: msgspec.Struct
    if chat:
        resp = ChatCompletion(rid, created, model, [_chat_choice(i, text, merged, st)
                                                    for i, (text, merged, st) in enumerate(choices)], usage)
    else:
        resp = Completion(rid, created, model, [
            CompletionChoice(i, text, st.finish_reason, st.completion_logprobs(merged, 0))
            for i, (text, merged, st) in enumerate(choices)], usage)
    return json_encoder.encode(resp)
