"""One choice's engine output -> typed steps: detokenize, stop strings, tool calls and reasoning, logprobs.

    out = ChoiceOutput(tokenizer, choice, stops, want_logprobs, parser, prompt)
    frame = out.feed(chunks)          # [ReasoningStep, TextStep, ToolCallStep..., LogprobsStep, FinishStep]

`prompt` (completions' echo with logprobs: the prompt's ids and top k) puts the prompt's logprobs, which the
engine answers on its first chunk, in a LogprobsStep(prompt=True) ahead of the output's.

Token counts live here (the tokens this choice took, up to a stop string) and nowhere else.
"""

from __future__ import annotations

import secrets
from typing import Any

from protocol.messages import OutputChunk
from services.frontend.agents import MarkerDetokenizer
from services.frontend.prompt_logprobs import prompt_rows
from services.frontend.steps import (
    FinishStep,
    Frame,
    LogprobsStep,
    ReasoningStep,
    TextStep,
    TokenLogprob,
    ToolCallStep,
)
from shared.parsers import OutputParser, Parsed
from shared.tokenizer import IncrementalDetokenizer, StopStringMatcher, Tokenizer
from shared.tokenizer.token_bytes import token_bytes


def tool_call_id() -> str:
    return f"call_{secrets.token_hex(12)}"


class ChoiceOutput:
    __slots__ = ("_call_ids", "_lp", "_prompt_lp", "cached_tokens", "choice", "completion_tokens", "detok",
                 "finish_reason", "parser", "prompt", "stopper", "tok", "want_logprobs")

    def __init__(self, tok: Tokenizer, choice: int, stops: list[str], want_logprobs: bool,
                 parser: OutputParser | None = None, prompt: tuple[list[int], int] | None = None) -> None:
        self.tok, self.choice, self.want_logprobs, self.parser = tok, choice, want_logprobs, parser
        self.prompt = prompt  # echo with logprobs: (prompt ids, top k), until the engine answers them
        self._prompt_lp: list[TokenLogprob] = []
        self.detok = MarkerDetokenizer(tok) if parser is not None else IncrementalDetokenizer(tok)
        self.stopper = StopStringMatcher(stops) if stops else None
        self.completion_tokens = 0
        self.cached_tokens = 0
        self.finish_reason: str | None = None
        self._call_ids: dict[int, str] = {}
        self._lp: list[TokenLogprob] = []

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None

    def feed(self, chunks: list[OutputChunk]) -> Frame:
        text = ""
        for chunk in chunks:
            if self.finish_reason is not None:
                break
            if self.prompt is not None and chunk.prompt_logprobs is not None:
                self._prompt_logprobs(chunk)
            text += self._take_all(chunk) if self.stopper is None else self._take_until_stop(chunk)
            if chunk.usage is not None:
                self.cached_tokens = chunk.usage.cached_tokens
            if chunk.finish_reason is not None and self.finish_reason is None:
                self.finish_reason = "length" if chunk.finish_reason == "length" else "stop"
        if self.finish_reason is not None:
            text += self.detok.flush() if self.stopper is None else self._flush_stopper()
        frame = self._text_steps(text, self.finish_reason is not None)
        if self._prompt_lp:
            frame.append(LogprobsStep(tuple(self._prompt_lp), self.choice, prompt=True))
            self._prompt_lp = []
        if self._lp:
            frame.append(LogprobsStep(tuple(self._lp), self.choice))
            self._lp = []
        if self.finish_reason is not None:
            stop = self.stopper.stopped if self.stopper is not None else None
            frame.append(FinishStep(self.finish_reason, stop, self.choice))
        return frame

    def _take_all(self, chunk: OutputChunk) -> str:
        ids = chunk.token_ids
        self.completion_tokens += len(ids)
        if self.want_logprobs:
            self._logprobs(chunk, 0, len(ids))
        return self.detok.add(ids)

    def _take_until_stop(self, chunk: OutputChunk) -> str:
        assert self.stopper is not None
        out = ""
        for i, tid in enumerate(chunk.token_ids):
            self.completion_tokens += 1
            text, stopped = self.stopper.feed(self.detok.add([tid]))
            out += text
            self._logprobs(chunk, i, i + 1)
            if stopped:
                self.finish_reason = "stop"
                break
        return out

    def _flush_stopper(self) -> str:
        assert self.stopper is not None
        if self.finish_reason == "stop" and self.stopper.stopped:
            return ""
        text, stopped = self.stopper.feed(self.detok.flush())
        return text if stopped else text + self.stopper.flush()

    # ---- steps ---------------------------------------------------------------------------------
    def _text_steps(self, text: str, final: bool) -> Frame:
        if self.parser is None:
            return [TextStep(text, self.choice)] if text else []
        parsed = self.parser.feed(text) if text or not final else Parsed()
        if final:
            parsed.add(self.parser.finish())
        frame: Frame = []
        if parsed.reasoning:
            frame.append(ReasoningStep(parsed.reasoning, self.choice))
        if parsed.content:
            frame.append(TextStep(parsed.content, self.choice))
        frame.extend(self._call_step(c) for c in parsed.calls)
        return frame

    def _call_step(self, call: Any) -> ToolCallStep:
        """A CallDelta (index, name on the first, an arguments fragment), or a whole call: the next index."""
        index = getattr(call, "index", None)
        if index is None:
            index = len(self._call_ids)
        first = index not in self._call_ids
        if first:
            self._call_ids[index] = tool_call_id()
        return ToolCallStep(index, self._call_ids[index] if first else None, call.name if first else None,
                            call.arguments, self.choice)

    @property
    def tool_calls(self) -> int:
        return len(self._call_ids)

    def _logprobs(self, chunk: OutputChunk, lo: int, hi: int) -> None:
        if not self.want_logprobs or chunk.logprobs is None:
            return
        tops = chunk.top_logprobs
        for i in range(lo, min(hi, len(chunk.logprobs))):
            top = tuple(self._token(t.token_id, t.logprob) for t in (tops[i] if tops and i < len(tops) else ()))
            self._lp.append(self._token(chunk.token_ids[i], chunk.logprobs[i], top))

    def _prompt_logprobs(self, chunk: OutputChunk) -> None:
        assert self.prompt is not None
        rows = prompt_rows(self.prompt[0], chunk, self.prompt[1])
        if rows is not None:
            for tid, lp, top in zip(*rows, strict=True):
                self._prompt_lp.append(self._token(tid, lp, tuple(self._token(t.token_id, t.logprob)
                                                                  for t in top or ())))
        self.prompt = None  # once (a migrated request's continuation answers them again)

    def _token(self, token_id: int, logprob: float | None, top: tuple[TokenLogprob, ...] = ()) -> TokenLogprob:
        text = self.tok.decode([token_id], skip_special_tokens=False)
        return TokenLogprob(token_id, text, token_bytes(self.tok, token_id, text), logprob, top)

