"""POST /v1/embeddings: OpenAI's request -> token ids -> an embedding worker's `embed` -> OpenAI's response."""

from __future__ import annotations

import asyncio
import base64
import secrets
import struct

from protocol.embeddings import EmbedRequest, EmbedResponse
from protocol.messages import ErrorCode
from services.frontend.dispatch import Dispatcher
from services.frontend.http_errors import (
    WORKER_HEADER,
    decode_body,
    error_response,
    failure_response,
    json_encoder,
    openai_error,
)
from services.frontend.limits import PROMPT_BYTES_PER_TOKEN, RequestGate
from services.frontend.models import ModelEntry, ModelRegistry
from services.frontend.openai_types import EmbeddingData, EmbeddingRequest, EmbeddingResponse, EmbeddingUsage
from services.frontend.preprocess import THREAD_TOKENIZE_CHARS
from shared.errors import BadRequest
from shared.http import Request, Response
from shared.runtime.errors import RuntimeFailure
from shared.telemetry.tracing import inject_headers, span
from shared.tokenizer import Tokenizer

INPUT_SHAPES = "a string, a list of strings, a list of token ids, or a list of lists of token ids"


async def embedding_inputs(tok: Tokenizer, value: str | list[str | int | list[int]], context_length: int,
                           max_prompt_tokens: int | None = None, max_prompt_bytes: int | None = None
                           ) -> list[list[int]]:
    """OpenAI's `input` as token ids per input; raises BadRequest for an empty, mixed or too long input."""
    items = [value] if isinstance(value, str) else list(value)
    if not items:
        raise BadRequest("input must not be empty", "input")
    if all(isinstance(x, int) for x in items):
        inputs: list[list[int]] = [items]  # type: ignore[list-item]
    elif all(isinstance(x, list) for x in items):
        inputs = [list(x) for x in items]  # type: ignore[arg-type]
    elif all(isinstance(x, str) for x in items):
        # checked before tokenizing (--max-prompt-bytes, as for generation)
        budget = max_prompt_bytes or PROMPT_BYTES_PER_TOKEN * (max_prompt_tokens or context_length)
        over = (i for i, x in enumerate(items) if len(x) > budget or len(x.encode()) > budget)  # type: ignore[union-attr]
        if (i := next(over, None)) is not None:
            raise BadRequest(f"input {i} is over {budget} bytes", "input", ErrorCode.CONTEXT_LENGTH)
        inputs = await _encode_all(tok, items)  # type: ignore[arg-type]
    else:
        raise BadRequest(f"input must be {INPUT_SHAPES}, not a mix", "input")
    vocab = tok.vocab_size
    for i, ids in enumerate(inputs):
        n = len(ids)
        if n == 0:
            raise BadRequest(f"input {i} is empty", "input")
        if any(t < 0 or t >= vocab for t in ids):
            raise BadRequest(f"input {i} has a token id out of the vocabulary (0..{vocab - 1})", "input")
        if max_prompt_tokens is not None and n > max_prompt_tokens:
            raise BadRequest(f"input {i} has {n} tokens; this server accepts at most {max_prompt_tokens}",
                             "input", ErrorCode.CONTEXT_LENGTH)
        if n > context_length:
            raise BadRequest(f"This model's maximum context length is {context_length} tokens, however you "
                             f"requested {n} tokens in input {i}. Please reduce your input.", "input",
                             ErrorCode.CONTEXT_LENGTH)
    return inputs


async def _encode_all(tok: Tokenizer, texts: list[str]) -> list[list[int]]:
    """Special tokens included (BOS/EOS as the tokenizer's template adds them), as SGLang and vLLM embed."""
    if sum(len(t) for t in texts) > THREAD_TOKENIZE_CHARS:
        return await asyncio.to_thread(tok.encode_batch, texts, True)
    return tok.encode_batch(texts, True)


def encode_vector(vec: list[float], encoding_format: str) -> list[float] | str:
    """"float": the numbers; "base64": little-endian float32 bytes, base64 (as OpenAI sends them)."""
    if encoding_format == "base64":
        return base64.b64encode(struct.pack(f"<{len(vec)}f", *vec)).decode("ascii")
    return vec


def _dimension_error(model: str, dim: int, asked: int) -> Response:
    return error_response(400, f"The model `{model}` makes {dim}-dimensional embeddings and cannot shorten them; "
                               f"`dimensions` must be {dim} or absent (got {asked}).", "invalid_value", "dimensions")


class EmbeddingsRoute:
    """The route's logic; FrontendApp registers it and counts it in flight."""

    def __init__(self, registry: ModelRegistry, dispatcher: Dispatcher, max_prompt_tokens: int | None = None,
                 direct_header: str | None = None, max_prompt_bytes: int | None = None) -> None:
        self.registry = registry
        self.dispatcher = dispatcher
        self.max_prompt_tokens = max_prompt_tokens
        self.max_prompt_bytes = max_prompt_bytes  # --max-prompt-bytes (services.frontend.limits)
        self.direct_header = direct_header  # set in router mode "direct": the header naming the worker
        self._dims: dict[str, int] = {}  # each model's dimension, once seen

    async def __call__(self, req: Request) -> Response:
        body = decode_body(req.body, EmbeddingRequest)
        if isinstance(body, Response):
            return body
        model = self.registry.get(body.model)
        if model is None:
            return error_response(404, f"The model `{body.model}` does not exist.", "model_not_found", "model")
        if not model.is_embedding:
            return error_response(400, f"The model `{body.model}` is a {model.model_type} model and does not serve "
                                       "embeddings; use an embedding model.", "model_not_embedding", "model")
        if not model.candidates():
            return error_response(503, f"no worker is serving model {body.model!r} right now", "no_workers",
                                  retry_after=1.0)
        dim = self._dims.get(model.name)
        if body.dimensions is not None and dim is not None and body.dimensions != dim:
            return _dimension_error(model.name, dim, body.dimensions)
        instance = None
        if self.direct_header is not None:
            instance = req.headers.get(self.direct_header)
            if not instance:
                return error_response(400, f"router mode is direct: send the worker in header {self.direct_header}")
            if (bad := RequestGate.instance(instance, self.direct_header)) is not None:
                return openai_error(bad)
        try:
            inputs = await embedding_inputs(model.tokenizer, body.input, model.context_length,
                                            self.max_prompt_tokens, self.max_prompt_bytes)
        except BadRequest as e:
            return failure_response(e)
        return await self._run(model, body, inputs, instance)

    async def _run(self, model: ModelEntry, body: EmbeddingRequest, inputs: list[list[int]],
                   instance: str | None) -> Response:
        rid = f"embd-{secrets.token_hex(12)}"
        tokens = sum(len(ids) for ids in inputs)
        served: dict[str, str] = {}
        with span("frontend.embeddings", attributes={"request_id": rid, "model": model.name,
                                                     "inputs": len(inputs), "prompt_tokens": tokens}):
            headers = inject_headers({})
            try:
                answer: EmbedResponse = await self.dispatcher.call(
                    model, EmbedRequest(request_id=rid, inputs=inputs, model=body.model), rid,
                    [t for ids in inputs for t in ids], instance, headers, served)
            except RuntimeFailure as e:
                return failure_response(e)
        vectors = answer.embeddings
        if len(vectors) != len(inputs):
            return error_response(502, f"the worker answered {len(vectors)} embeddings for {len(inputs)} inputs",
                                  ErrorCode.ENGINE_ERROR.value)
        dim = len(vectors[0])
        self._dims[model.name] = dim
        if body.dimensions is not None and body.dimensions != dim:
            return _dimension_error(model.name, dim, body.dimensions)
        data = [EmbeddingData(index=i, embedding=encode_vector(v, body.encoding_format)) for i, v in enumerate(vectors)]
        usage = EmbeddingUsage(prompt_tokens=tokens, total_tokens=tokens)
        resp = EmbeddingResponse(data=data, model=model.name, usage=usage)
        return Response(200, json_encoder.encode(resp), headers=[(WORKER_HEADER, served.get("instance_id", ""))])
