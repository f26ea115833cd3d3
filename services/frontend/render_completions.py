"""Steps -> OpenAI completions (a whole `text_completion` or its stream). Completions' echo goes first, and with
logprobs the prompt's tokens (LogprobsStep(prompt=True), services.frontend.prompt_logprobs) ahead of the output's."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

from protocol.messages import Usage
from services.frontend.http_errors import json_encoder, openai_error, sse_event
from services.frontend.openai_types import Completion, CompletionChoice, CompletionLogprobs, UsageInfo
from services.frontend.pipeline import Job
from services.frontend.render import openai_sse
from services.frontend.render_chat import usage_info
from services.frontend.steps import ErrorStep, FinishStep, Frame, LogprobsStep, TextStep, TokenLogprob, UsageStep
from shared.http import Response


def completion_logprobs(tokens: list[TokenLogprob], offset: int) -> CompletionLogprobs:
    """Logprobs in the completions shape; `offset`: where the first token's text starts in the choice's text."""
    offsets = []
    for t in tokens:
        offsets.append(offset)
        offset += len(t.token)
    tops = None
    if any(t.top for t in tokens):
        tops = [None if t.logprob is None else _top_dict(t.top) for t in tokens]  # the prompt's first: null
    return CompletionLogprobs([t.token for t in tokens], [t.logprob for t in tokens], tops, offsets)


def _top_dict(top: tuple[TokenLogprob, ...]) -> dict[str, float]:
    """Completions' top_logprobs map token text -> logprob; where two tokens share a text (U+FFFD for
    byte tokens) the likelier one stays (the row is sorted, most likely first)."""
    out: dict[str, float] = {}
    for a in top:
        if a.logprob is not None:
            out.setdefault(a.token, a.logprob)
    return out



class _Choice:
    def __init__(self, echo: str) -> None:
        self.text = echo  # the echo goes ahead of the first output
        self.sent = 0  # characters of text already in events
        self.tokens: list[TokenLogprob] = []
        self.finish: str | None = None
        self.prompt = False  # the tokens start with the prompt's (their offsets start at the echo's, 0)

    def unsent(self) -> str:
        out = self.text[self.sent:]
        self.sent = len(self.text)
        return out


class CompletionsRenderer:
    def __init__(self, job: Job) -> None:
        self.rid, self.model, self.created = job.request_id, job.model.name, int(time.time())
        self.include_usage = job.prepared.include_usage
        self.echo = job.prepared.echo

    def error(self, step: ErrorStep) -> Response:
        return openai_error(step)

    async def whole(self, frames: AsyncIterator[Frame]) -> Response:
        choices: dict[int, _Choice] = {}
        usage = None
        async for frame in frames:
            for step in frame:
                if isinstance(step, ErrorStep):
                    return openai_error(step)
                if isinstance(step, UsageStep):
                    usage = step.usage if not step.running else usage
                    continue
                c = choices.setdefault(step.choice, _Choice(self.echo))
                if isinstance(step, TextStep):
                    c.text += step.text
                elif isinstance(step, LogprobsStep):
                    c.tokens.extend(step.tokens)
                    c.prompt = c.prompt or step.prompt
                elif isinstance(step, FinishStep):
                    c.finish = step.reason
        body = Completion(self.rid, self.created, self.model, [
            CompletionChoice(i, c.text, c.finish,
                             completion_logprobs(c.tokens, 0 if c.prompt else len(self.echo)) if c.tokens else None)
            for i, c in sorted(choices.items())], usage_info(usage) if usage else None)
        return Response(200, json_encoder.encode(body))

    def stream(self, frames: AsyncIterator[Frame]) -> AsyncIterator[bytes]:
        choices: dict[int, _Choice] = {}

        def chunk(frame: Frame) -> tuple[bytes, bool]:
            c = choices.setdefault(frame[0].choice, _Choice(self.echo))
            return self._chunk(frame, frame[0].choice, c), c.finish is not None

        def usage_event(usage: Usage) -> bytes:
            return sse_event(Completion(self.rid, self.created, self.model, [], usage_info(usage)))

        return openai_sse(frames, chunk, usage_event if self.include_usage else None)

    def _chunk(self, frame: Frame, index: int, c: _Choice) -> bytes:
        offset = len(c.text)  # the first new token's text starts after what was sent (and the echo)
        tokens: list[TokenLogprob] = []
        reason: str | None = None
        usage: UsageInfo | None = None
        for step in frame:
            if isinstance(step, TextStep):
                c.text += step.text
            elif isinstance(step, LogprobsStep):
                tokens.extend(step.tokens)
                if step.prompt:
                    offset = c.sent  # the prompt's tokens start where the (unsent) echo does
            elif isinstance(step, FinishStep):
                reason = c.finish = step.reason
            elif isinstance(step, UsageStep):
                usage = usage_info(step.usage)
        text = c.unsent()
        if not (text or tokens or reason):
            return b""
        lp = completion_logprobs(tokens, offset) if tokens else None
        return sse_event(Completion(self.rid, self.created, self.model, [CompletionChoice(index, text, reason, lp)],
                                    usage))
