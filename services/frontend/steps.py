"""The typed steps every front door renders: what one choice's output adds, in order.

The pipeline (services.frontend.pipeline) turns engine output into frames: the steps one
batch of one choice adds. Renderers (chat, completions, Responses, Anthropic Messages) turn
frames into their API's JSON or events; none of them sees engine chunks or tokens.
`choice` is the choice's index (OpenAI's `n`); usage and errors belong to the whole request.
Steps are frozen msgspec Structs (a few per engine batch: cheap to build), never sent anywhere.
"""

from __future__ import annotations

import msgspec

from protocol.messages import Usage


class TextStep(msgspec.Struct, frozen=True, gc=False):
    text: str
    choice: int = 0


class ReasoningStep(msgspec.Struct, frozen=True, gc=False):
    text: str
    choice: int = 0


class ToolCallStep(msgspec.Struct, frozen=True, gc=False):
    """A fragment of tool call `index` (0, 1, ... per choice); `id` and `name` are set on its first fragment."""

    index: int
    id: str | None
    name: str | None
    arguments_fragment: str
    choice: int = 0


class TokenLogprob(msgspec.Struct, frozen=True, gc=False):
    token_id: int
    token: str  # the token's text (alone)
    bytes: bytes  # the token's own bytes (shared.tokenizer.token_bytes)
    logprob: float | None  # None: an echoed prompt's first token (nothing precedes it)
    top: tuple[TokenLogprob, ...] = ()


class LogprobsStep(msgspec.Struct, frozen=True, gc=False):
    """`prompt`: the tokens are the prompt's (completions' echo with logprobs), ahead of the output's."""

    tokens: tuple[TokenLogprob, ...]
    choice: int = 0
    prompt: bool = False


class FinishStep(msgspec.Struct, frozen=True, gc=False):
    """`reason`: stop or length; `stop_sequence`: the stop string that ended the output, if one did."""

    reason: str
    stop_sequence: str | None = None
    choice: int = 0


class UsageStep(msgspec.Struct, frozen=True, gc=False):
    """The request's usage (all choices); `running`: a mid-stream count (continuous usage), not the final one."""

    usage: Usage
    running: bool = False
    choice: int = 0


class ErrorStep(msgspec.Struct, frozen=True, gc=False):
    """The request failed after it started: the API's error event ends the stream."""

    status: int
    code: str
    message: str
    retry_after: float | None = None
    param: str | None = None
    choice: int = 0


Step = TextStep | ReasoningStep | ToolCallStep | LogprobsStep | FinishStep | UsageStep | ErrorStep

Frame = list[Step]  # the steps one engine batch of one choice adds (one event per frame where the API can)
