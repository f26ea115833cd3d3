"""Messages that cross a process boundary: requests, outputs, stream frames, errors.

Pure data: msgspec Structs, no I/O, nothing imported from the rest of shoal.
The wire encoding is msgpack (see `protocol.codec`).
"""

from __future__ import annotations

import enum

import msgspec

from protocol.multimodal import ImageItem

PROTOCOL_VERSION = 1


class ErrorCode(enum.StrEnum):
    """Why a request ended without a completion. Each maps to one HTTP status."""

    BAD_REQUEST = "bad_request"
    NOT_FOUND = "not_found"
    CONTEXT_LENGTH = "context_length_exceeded"
    OVERLOADED = "overloaded"  # an in-flight cap or a worker's queue is full: 429
    WORKERS_BUSY = "workers_busy"  # every worker of the model is past a busy threshold: 503
    NO_WORKERS = "no_workers"
    TIMEOUT = "timeout"
    CANCELLED = "cancelled"
    WORKER_LOST = "worker_lost"
    ENGINE_ERROR = "engine_error"
    TRANSFER_FAILED = "transfer_failed"
    INTERNAL = "internal"
    UNAUTHORIZED = "unauthorized"


HTTP_STATUS: dict[ErrorCode, int] = {
    ErrorCode.BAD_REQUEST: 400,
    ErrorCode.CONTEXT_LENGTH: 400,
    ErrorCode.UNAUTHORIZED: 401,
    ErrorCode.NOT_FOUND: 404,
    ErrorCode.CANCELLED: 499,
    ErrorCode.OVERLOADED: 429,
    ErrorCode.NO_WORKERS: 503,
    ErrorCode.WORKERS_BUSY: 503,
    ErrorCode.TIMEOUT: 504,
    ErrorCode.WORKER_LOST: 502,
    ErrorCode.ENGINE_ERROR: 500,
    ErrorCode.TRANSFER_FAILED: 502,
    ErrorCode.INTERNAL: 500,
}


class ErrorInfo(msgspec.Struct, frozen=True, omit_defaults=True):
    code: ErrorCode
    message: str
    retry_after: float | None = None


class SamplingOptions(msgspec.Struct, frozen=True, omit_defaults=True):
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = -1
    min_p: float = 0.0
    seed: int | None = None
    repetition_penalty: float = 1.0
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    logit_bias: dict[int, float] = {}  # token id -> added to its logit before sampling (OpenAI's -100..100)


class StopConditions(msgspec.Struct, frozen=True, omit_defaults=True):
    max_tokens: int = 16  # as OpenAI's completions API (the frontend's default too)
    min_tokens: int = 0
    stop_token_ids: list[int] = []
    stop: list[str] = []
    ignore_eos: bool = False


class OutputOptions(msgspec.Struct, frozen=True, omit_defaults=True):
    logprobs: int | None = None  # None: none; 0: the chosen token's; k: also top-k
    detokenize: bool = False  # the worker sends text deltas (frontend detokenizes otherwise)
    skip_special_tokens: bool = True
    prompt_logprobs: int | None = None  # None: none; k >= 0: each prompt token's logprob (and top-k), first chunk


class RoutingHints(msgspec.Struct, frozen=True, omit_defaults=True):
    instance_id: str | None = None  # direct choice, set by the router
    dp_rank: int | None = None
    prefill_instance_id: str | None = None
    overlap_blocks: int = 0  # what the router expects the worker to have cached
    session_id: str = ""  # the client's session (x-session-id): routers keep it on one worker
    tenant: str = ""  # who sent it (--tenant-header or the API key's hash): the admission queue's fair share
    deadline: float = 0.0  # unix seconds the client stops waiting at (x-request-deadline); 0: none


class BootstrapInfo(msgspec.Struct, frozen=True, omit_defaults=True):
    """Pairs a prefill with a decode worker: where and under which room KV moves."""

    host: str
    port: int
    room: int
    instance_id: str = ""  # the peer's instance id (NIXL agent name for the reference engine)


class Grammar(msgspec.Struct, frozen=True, array_like=True):
    """A constraint on the output (structured output): the engine samples only tokens it allows.

    `kind`: "json_schema" (spec: the schema as JSON), "json_object" (any JSON object; spec ""),
    "regex", "ebnf" (xgrammar's EBNF, root rule `root`) or "structural_tag" (xgrammar's
    structural tag as JSON: tool calls in a parser's own format).
    """

    kind: str
    spec: str = ""


class EngineRequest(msgspec.Struct, frozen=True, omit_defaults=True):
    request_id: str
    token_ids: list[int]
    model: str = ""
    sampling: SamplingOptions = SamplingOptions()
    stop: StopConditions = StopConditions()
    output: OutputOptions = OutputOptions()
    routing: RoutingHints = RoutingHints()
    bootstrap: BootstrapInfo | None = None
    annotations: dict[str, str] = {}
    multimodal: list[ImageItem] = []  # images in prompt order (protocol.multimodal)
    grammar: Grammar | None = None  # structured output / forced tool calls (shared.grammar)
    lora: str = ""  # the LoRA adapter to run with ("": the base model); part of the KV block hash chain
    priority: int | None = None  # SGLang's: larger runs first where the engine schedules by priority
    v: int = PROTOCOL_VERSION


class TopLogprob(msgspec.Struct, frozen=True, array_like=True):
    token_id: int
    logprob: float


class Usage(msgspec.Struct, frozen=True, omit_defaults=True):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0


class OutputChunk(msgspec.Struct, frozen=True, omit_defaults=True):
    """New tokens of one request since the last chunk (a chunk may hold several)."""

    token_ids: list[int] = []
    text: str | None = None  # only when the worker detokenizes
    logprobs: list[float] | None = None  # one per token in token_ids
    top_logprobs: list[list[TopLogprob]] | None = None
    cum_logprob: float | None = None
    finish_reason: str | None = None  # "stop" | "length" | "abort" | "error"
    stop_reason: int | str | None = None  # the stop token id or string that matched
    usage: Usage | None = None  # set on the final chunk
    # output.prompt_logprobs asked: on the first chunk, one per prompt token (the first is None: nothing precedes it)
    prompt_logprobs: list[float | None] | None = None
    prompt_top_logprobs: list[list[TopLogprob]] | None = None  # per prompt token ([] for the first)


class StreamFrame(msgspec.Struct, frozen=True, omit_defaults=True, array_like=True):
    """One message of a response stream. seq 0 is the acknowledgement.

    `items` are msgpack-encoded handler outputs (several when the reader lags).
    """

    seq: int
    items: list[msgspec.Raw] = []
    error: ErrorInfo | None = None
    final: bool = False
    instance_id: str = ""  # on the acknowledgement: who took the request
    keepalive: bool = False


class Cancel(msgspec.Struct, frozen=True):
    request_id: str
    reason: str = "client_gone"


class RouteRequest(msgspec.Struct, frozen=True, omit_defaults=True):
    """To the router service: pick a worker for these tokens (or: this request ended)."""

    request_id: str
    token_ids: list[int] = []
    finished: bool = False  # the routed request ended: release what the router tracks for it
    exclude: list[str] = []  # instances not to pick (e.g. one that just failed)
    lora: str = ""  # the request's LoRA adapter (its blocks hash on their own chain)
    session_id: str = ""  # the request's session: the router keeps it on one worker (its TTL)
    # the router's admission queue (shared.routing.admission.Ticket); an older sender leaves them out: the
    # default class, no tenant, no deadline
    priority: int = 0  # larger is admitted first when every worker is busy
    tenant: str = ""  # fair share and rate limit key (RoutingHints.tenant)
    deadline: float = 0.0  # unix seconds the client stops waiting at (RoutingHints.deadline); 0: none


class RouteResponse(msgspec.Struct, frozen=True, omit_defaults=True):
    instance_id: str
    overlap_blocks: int = 0
    dp_rank: int | None = None  # set for a worker with several DP ranks: the one holding the prefix
