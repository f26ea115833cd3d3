"""Engine output -> OpenAI text: incremental detokenization, stop strings, logprobs, usage."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from protocol.messages import OutputChunk, TopLogprob, Usage
from services.frontend.openai_types import (
    ChatLogprobContent,
    ChatLogprobs,
    ChatLogprobTop,
    CompletionLogprobs,
    PromptTokensDetails,
    UsageInfo,
)
from services.frontend.prompt_logprobs import prompt_rows
from shared.parsers import OutputParser
from shared.tokenizer import IncrementalDetokenizer, StopStringMatcher, Tokenizer


@dataclass
class Step:
    """What one batch of engine output adds to the response."""

    text: str = ""
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[float | None] = field(default_factory=list)  # None: an echoed prompt's first token
    top: list[list[TopLogprob] | None] = field(default_factory=list)
    finish_reason: str | None = None


class OutputState:
    def __init__(self, tok: Tokenizer, prompt_tokens: int, stops: list[str], want_logprobs: bool,
                 echo: str = "", continuous_usage: bool = False) -> None:
        self.tok = tok
        self.echo = echo  # sent ahead of the first output (completions' echo)
        self.continuous_usage = continuous_usage
        self.detok = IncrementalDetokenizer(tok)
        self.stopper = StopStringMatcher(stops) if stops else None
        self.want_logprobs = want_logprobs
        self.prompt_tokens = prompt_tokens
        self.completion_tokens = 0
        self.cached_tokens = 0
        self.finish_reason: str | None = None
        self.parser: OutputParser | None = None  # tool calls and reasoning (services.frontend.agents)
        self.prompt: tuple[list[int], int] | None = None  # echo with logprobs: (prompt ids, top k), until answered

    def feed(self, chunks: list[OutputChunk]) -> Step:
        step = Step(text=self.echo)
        self.echo = ""
        for chunk in chunks:
            if self.finish_reason is not None:
                break
            if self.prompt is not None and chunk.prompt_logprobs is not None:
                self._prompt_rows(chunk, step)
            if self.stopper is None:
                self._take_all(chunk, step)
            else:
                self._take_until_stop(chunk, step)
            if chunk.usage is not None:
                self.cached_tokens = chunk.usage.cached_tokens
            if chunk.finish_reason is not None and self.finish_reason is None:
                self.finish_reason = "length" if chunk.finish_reason == "length" else "stop"
        if self.finish_reason is not None:
            step.text += self.detok.flush() if self.stopper is None else self._flush_stopper()
            step.finish_reason = self.finish_reason
        return step

    def _take_all(self, chunk: OutputChunk, step: Step) -> None:
        ids = chunk.token_ids
        self.completion_tokens += len(ids)
        step.text += self.detok.add(ids)
        self._logprobs(chunk, 0, len(ids), step)

    def _take_until_stop(self, chunk: OutputChunk, step: Step) -> None:
        assert self.stopper is not None
        for i, tid in enumerate(chunk.token_ids):
            self.completion_tokens += 1
            text, stopped = self.stopper.feed(self.detok.add([tid]))
            step.text += text
            self._logprobs(chunk, i, i + 1, step)
            if stopped:
                self.finish_reason = "stop"
                return

    def _flush_stopper(self) -> str:
        assert self.stopper is not None
        if self.finish_reason == "stop" and self.stopper.stopped:
            return ""
        text, stopped = self.stopper.feed(self.detok.flush())
        return text if stopped else text + self.stopper.flush()

    def _logprobs(self, chunk: OutputChunk, lo: int, hi: int, step: Step) -> None:
        step.token_ids.extend(chunk.token_ids[lo:hi])
        if not self.want_logprobs or chunk.logprobs is None:
            return
        step.logprobs.extend(chunk.logprobs[lo:hi])
        if chunk.top_logprobs is not None:
            step.top.extend(chunk.top_logprobs[lo:hi])

    def _prompt_rows(self, chunk: OutputChunk, step: Step) -> None:
        assert self.prompt is not None
        rows = prompt_rows(self.prompt[0], chunk, self.prompt[1])
        if rows is not None:
            step.token_ids.extend(rows[0])
            step.logprobs.extend(rows[1])
            if self.prompt[1] > 0:
                step.top.extend(rows[2])
        self.prompt = None  # once (a migrated request's continuation answers them again)

    def usage(self) -> UsageInfo:
        return UsageInfo(
            prompt_tokens=self.prompt_tokens,
            completion_tokens=self.completion_tokens,
            total_tokens=self.prompt_tokens + self.completion_tokens,
            prompt_tokens_details=PromptTokensDetails(cached_tokens=self.cached_tokens),
        )

    # ---- logprob shapes --------------------------------------------------------------
    def _token_text(self, tid: int) -> str:
        return self.tok.decode([tid], skip_special_tokens=False)

    def chat_logprobs(self, step: Step) -> ChatLogprobs | None:
        if not self.want_logprobs or not step.logprobs:
            return None
        content = []
        for i, (tid, lp) in enumerate(zip(step.token_ids, step.logprobs, strict=False)):
            text = self._token_text(tid)
            tops = [ChatLogprobTop(self._token_text(t.token_id), t.logprob, list(self._token_text(t.token_id)
                                   .encode())) for t in ((step.top[i] if i < len(step.top) else None) or [])]
            content.append(ChatLogprobContent(text, lp or 0.0, list(text.encode()), tops))
        return ChatLogprobs(content)

    def completion_logprobs(self, step: Step, offset: int) -> CompletionLogprobs | None:
        if not self.want_logprobs or not step.logprobs:
            return None
        tokens = [self._token_text(t) for t in step.token_ids[: len(step.logprobs)]]
        offsets, pos = [], offset
        for t in tokens:
            offsets.append(pos)
            pos += len(t)
        tops = None
        if step.top:
            tops = [None if row is None else _top_dict(row, self._token_text) for row in step.top]
        return CompletionLogprobs(tokens, list(step.logprobs), tops, offsets)


def _top_dict(row: list[TopLogprob], text: Callable[[int], str]) -> dict[str, float]:
    """Completions' top_logprobs map token text -> logprob; where two tokens share a text (U+FFFD for
    byte tokens) the likelier one stays (the row is sorted, most likely first)."""
    out: dict[str, float] = {}
    for t in row:
        out.setdefault(text(t.token_id), t.logprob)
    return out


def merge_usage(first: Usage | None, prompt_tokens: int, completion_tokens: int) -> Usage:
    return Usage(prompt_tokens, completion_tokens, first.cached_tokens if first else 0)


def merge_steps(steps: list[Step]) -> Step:
    """The steps of a whole completion as one (for its logprobs)."""
    merged = Step()
    for s in steps:
        merged.token_ids.extend(s.token_ids)
        merged.logprobs.extend(s.logprobs)
        merged.top.extend(s.top)
    return merged
