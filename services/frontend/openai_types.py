"""OpenAI-compatible request and response types (msgspec: validation and fast JSON)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

Temperature = Annotated[float, Meta(ge=0.0, le=2.0)]
TopP = Annotated[float, Meta(gt=0.0, le=1.0)]
Penalty = Annotated[float, Meta(ge=-2.0, le=2.0)]
PositiveInt = Annotated[int, Meta(ge=1)]
NonNegInt = Annotated[int, Meta(ge=0)]
TopLogprobs = Annotated[int, Meta(ge=0, le=20)]
StopSpec = str | Annotated[list[str], Meta(max_length=16)] | None


class ContentPart(msgspec.Struct, frozen=True, omit_defaults=True):
    type: str
    text: str | None = None
    image_url: dict[str, Any] | None = None


class ChatMessage(msgspec.Struct, frozen=True, omit_defaults=True):
    role: Literal["system", "user", "assistant", "tool", "developer", "function"]
    content: str | list[ContentPart] | None = None
    name: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    tool_call_id: str | None = None


class StreamOptions(msgspec.Struct, frozen=True):
    include_usage: bool = False
    continuous_usage_stats: bool = False  # usage on every chunk too (vLLM's extension)


class _Common(msgspec.Struct, frozen=True, kw_only=True):
    model: str
    max_tokens: PositiveInt | None = None
    temperature: Temperature | None = None
    top_p: TopP | None = None
    top_k: int | None = None
    min_p: Annotated[float, Meta(ge=0.0, le=1.0)] | None = None
    seed: int | None = None
    stop: StopSpec = None
    stop_token_ids: list[int] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: Annotated[int, Meta(ge=1, le=16)] = 1  # choices (services.frontend.choices)
    frequency_penalty: Penalty | None = None
    presence_penalty: Penalty | None = None
    repetition_penalty: Annotated[float, Meta(gt=0.0, le=2.0)] | None = None
    ignore_eos: bool = False
    min_tokens: NonNegInt = 0
    user: str | None = None
    logit_bias: dict[str, Annotated[float, Meta(ge=-100.0, le=100.0)]] | None = None  # token id -> bias
    priority: int | None = None  # SGLang's: larger is scheduled first (engines with priority scheduling)
    timeout: float | None = None  # seconds the client waits to be admitted: a queue deadline (admission_hook)


class ChatCompletionRequest(_Common, frozen=True, kw_only=True):
    messages: Annotated[list[ChatMessage], Meta(min_length=1)]
    max_completion_tokens: PositiveInt | None = None
    logprobs: bool = False
    top_logprobs: TopLogprobs | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool = True
    response_format: dict[str, Any] | None = None
    regex: str | None = None  # SGLang's extra body fields for structured output (services.frontend.agents)
    ebnf: str | None = None
    choice: Annotated[list[str], Meta(min_length=1)] | None = None
    chat_template_kwargs: dict[str, Any] | None = None


class CompletionRequest(_Common, frozen=True, kw_only=True):
    # text, [text], token ids, or [token ids] (a batch of one, as lm-evaluation-harness sends)
    prompt: str | Annotated[list[str | int | list[int]], Meta(min_length=1)]
    max_tokens: NonNegInt | None = None  # 0 with echo: score the prompt only (as vLLM)
    logprobs: TopLogprobs | None = None
    echo: bool = False  # with logprobs: the prompt's logprobs too (services.frontend.prompt_logprobs)
    suffix: str | None = None


MAX_EMBEDDING_INPUTS = 2048  # as OpenAI


class EmbeddingRequest(msgspec.Struct, frozen=True, kw_only=True):
    model: str
    # a string, strings, token ids, or lists of token ids (the mix is checked after decoding)
    input: str | Annotated[list[str | int | list[int]], Meta(max_length=MAX_EMBEDDING_INPUTS)]
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: PositiveInt | None = None  # only the model's own dimension is accepted
    user: str | None = None


# ---- responses ---------------------------------------------------------------------------
class PromptTokensDetails(msgspec.Struct, frozen=True):
    cached_tokens: int = 0


class UsageInfo(msgspec.Struct, frozen=True):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prompt_tokens_details: PromptTokensDetails | None = None


class ChatLogprobTop(msgspec.Struct, frozen=True):
    token: str
    logprob: float
    bytes: list[int] | None = None


class ChatLogprobContent(msgspec.Struct, frozen=True):
    token: str
    logprob: float
    bytes: list[int] | None
    top_logprobs: list[ChatLogprobTop]


class ChatLogprobs(msgspec.Struct, frozen=True):
    content: list[ChatLogprobContent]


class CompletionLogprobs(msgspec.Struct, frozen=True):
    tokens: list[str]
    token_logprobs: list[float | None]  # an echoed prompt's first token: null
    top_logprobs: list[dict[str, float] | None] | None
    text_offset: list[int]


class FunctionCall(msgspec.Struct, frozen=True, omit_defaults=True):
    name: str | None = None
    arguments: str | None = None  # a JSON object as text


class ToolCall(msgspec.Struct, frozen=True):
    id: str
    function: FunctionCall
    type: str = "function"


class ToolCallDelta(msgspec.Struct, frozen=True, omit_defaults=True):
    index: int
    id: str | None = None
    type: str | None = None
    function: FunctionCall | None = None


class ResponseMessage(msgspec.Struct, frozen=True, omit_defaults=True):
    role: str
    content: str | None
    reasoning_content: str | None = None
    tool_calls: list[ToolCall] | None = None


class ChatChoice(msgspec.Struct, frozen=True):
    index: int
    message: ResponseMessage
    finish_reason: str | None
    logprobs: ChatLogprobs | None = None


class ChatCompletion(msgspec.Struct, frozen=True):
    id: str
    created: int
    model: str
    choices: list[ChatChoice]
    usage: UsageInfo
    object: str = "chat.completion"
    system_fingerprint: str | None = None


class Delta(msgspec.Struct, frozen=True, omit_defaults=True):
    role: str | None = None
    content: str | None = None
    reasoning_content: str | None = None
    tool_calls: list[ToolCallDelta] | None = None


class ChatChunkChoice(msgspec.Struct, frozen=True):
    index: int
    delta: Delta
    finish_reason: str | None = None
    logprobs: ChatLogprobs | None = None


class ChatCompletionChunk(msgspec.Struct, frozen=True):
    id: str
    created: int
    model: str
    choices: list[ChatChunkChoice]
    object: str = "chat.completion.chunk"
    usage: UsageInfo | None = None


class CompletionChoice(msgspec.Struct, frozen=True):
    index: int
    text: str
    finish_reason: str | None
    logprobs: CompletionLogprobs | None = None


class Completion(msgspec.Struct, frozen=True):
    id: str
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: UsageInfo | None = None
    object: str = "text_completion"


class EmbeddingData(msgspec.Struct, frozen=True, kw_only=True):
    object: str = "embedding"
    index: int
    embedding: list[float] | str  # str: base64 of little-endian float32


class EmbeddingUsage(msgspec.Struct, frozen=True):
    prompt_tokens: int
    total_tokens: int


class EmbeddingResponse(msgspec.Struct, frozen=True, kw_only=True):
    object: str = "list"
    data: list[EmbeddingData]
    model: str
    usage: EmbeddingUsage


class ModelEntry(msgspec.Struct, frozen=True):
    id: str
    created: int
    owned_by: str = "shoal"
    object: str = "model"
    parent: str | None = None  # a LoRA adapter's base model


class ModelList(msgspec.Struct, frozen=True):
    data: list[ModelEntry]
    object: str = "list"


class ErrorBody(msgspec.Struct, frozen=True):
    message: str
    type: str
    param: str | None = None
    code: str | int | None = None


class ErrorResponse(msgspec.Struct, frozen=True):
    error: ErrorBody
