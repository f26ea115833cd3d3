"""shoal's EngineRequest -> SGLang's `async_generate` arguments; SGLang's stream items -> OutputChunk.

Pure functions and one small cursor; nothing here imports sglang.

SGLang streams dicts `{"output_ids": [...], "meta_info": {...}}`. With
`--incremental-streaming-output` each item holds only the new tokens (and
the per-token logprob lists are sliced to match); without it every item
holds all tokens so far, and the list may even be the engine's own, still
growing, so the cursor copies the new part the moment an item arrives.
Stop strings are the frontend's business and never sent.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

from protocol.messages import EngineRequest, ErrorCode, Grammar, OutputChunk, TopLogprob, Usage
from shared.engine.base import EngineError
from shared.engine.sglang.multimodal import image_data_of
from shared.engine.sglang.prompt_logprobs import prompt_logprob_kwargs, prompt_logprobs_of


def sampling_params(req: EngineRequest) -> dict[str, Any]:
    """SGLang's sampling_params dict for `req` (top_k -1 means the whole vocabulary in both)."""
    s, stop = req.sampling, req.stop
    params: dict[str, Any] = {
        "max_new_tokens": stop.max_tokens,
        "min_new_tokens": stop.min_tokens,
        "temperature": s.temperature,
        "top_p": s.top_p,
        "top_k": s.top_k,
        "min_p": s.min_p,
        "repetition_penalty": s.repetition_penalty,
        "frequency_penalty": s.frequency_penalty,
        "presence_penalty": s.presence_penalty,
        "ignore_eos": stop.ignore_eos,
        "skip_special_tokens": req.output.skip_special_tokens,
    }
    if stop.stop_token_ids:
        params["stop_token_ids"] = list(stop.stop_token_ids)
    if s.seed is not None:
        params["sampling_seed"] = s.seed
    if s.logit_bias:
        params["logit_bias"] = {str(t): b for t, b in s.logit_bias.items()}  # SGLang keys are strings
    if req.grammar is not None:
        params.update(grammar_params(req.grammar))
    return params


# shoal's grammar kinds -> SGLang's sampling_params keys (its xgrammar backend compiles them)
_GRAMMAR_KEYS = {"json_schema": "json_schema", "regex": "regex", "ebnf": "ebnf", "structural_tag": "structural_tag"}


def grammar_params(g: Grammar) -> dict[str, str]:
    """One of SGLang's constraint keys; a JSON object without a schema is the schema `{"type": "object"}`."""
    if g.kind == "json_object":
        return {"json_schema": '{"type": "object"}'}
    return {_GRAMMAR_KEYS[g.kind]: g.spec}


def generate_kwargs(req: EngineRequest) -> dict[str, Any]:
    """Keyword arguments for `sglang.Engine.async_generate(..., stream=True)`."""
    kw: dict[str, Any] = {
        "input_ids": list(req.token_ids),
        "sampling_params": sampling_params(req),
        "stream": True,
        "rid": req.request_id,
    }
    if req.output.logprobs is not None:
        kw["return_logprob"] = True
        if req.output.logprobs > 0:
            kw["top_logprobs_num"] = req.output.logprobs
    kw.update(prompt_logprob_kwargs(req))
    if req.bootstrap is not None:
        kw["bootstrap_host"] = req.bootstrap.host
        kw["bootstrap_port"] = req.bootstrap.port
        kw["bootstrap_room"] = req.bootstrap.room
    if req.routing.dp_rank is not None:
        kw["routed_dp_rank"] = req.routing.dp_rank
    if req.lora:  # an adapter of --lora-paths NAME=PATH (or loaded at run time), by name
        kw["lora_path"] = req.lora
    if req.priority is not None:  # SGLang orders its queue by it with --enable-priority-scheduling
        kw["priority"] = req.priority
    images = image_data_of(req)
    if images is not None:
        kw["image_data"] = images
    return kw


@dataclass
class OutputCursor:
    """Turns SGLang's stream items, cumulative or incremental, into chunks of new tokens."""

    incremental: bool
    seen: int = 0
    prompt_logprobs: int | None = None  # asked (top-k): the first chunk carries the prompt's logprobs

    def chunk(self, item: dict[str, Any]) -> OutputChunk:
        """The chunk for one stream item; raises EngineError when SGLang ended the request with an error."""
        meta: dict[str, Any] = item.get("meta_info") or {}
        ids = list(item.get("output_ids") or ())
        start = 0 if self.incremental else self.seen
        new = ids[start:]
        self.seen += len(new)
        finish, stop_reason = finish_of(meta.get("finish_reason"))
        prompt: tuple[list[float | None] | None, list[list[TopLogprob]] | None] = (None, None)
        if self.prompt_logprobs is not None and "input_token_logprobs" in meta:
            prompt = prompt_logprobs_of(meta, self.prompt_logprobs)
            self.prompt_logprobs = None  # once
        return OutputChunk(
            token_ids=new,
            logprobs=_logprobs(meta.get("output_token_logprobs"), start, len(new)),
            top_logprobs=_top_logprobs(meta.get("output_top_logprobs"), start, len(new)),
            finish_reason=finish,
            stop_reason=stop_reason,
            usage=usage_of(meta) if finish is not None else None,
            prompt_logprobs=prompt[0],
            prompt_top_logprobs=prompt[1],
        )


def finish_of(reason: Any) -> tuple[str | None, int | str | None]:
    """(finish_reason, stop_reason) from SGLang's meta_info["finish_reason"]; errors raise EngineError."""
    if reason is None:
        return None, None
    if isinstance(reason, str):  # older versions: a bare type name
        return _finish_name(reason), None
    kind = reason.get("type")
    if kind == "stop":
        return "stop", reason.get("matched")
    if kind == "length":
        return "length", None
    if kind == "abort":
        status = reason.get("status_code")
        if status is None:  # aborted on request (cancel), not an error
            return "abort", None
        raise abort_error(int(status), str(reason.get("message") or "aborted by SGLang"))
    return _finish_name(str(kind)), None


def _finish_name(kind: str) -> str:
    return kind if kind in ("stop", "length", "abort") else "stop"


def abort_error(status: int, message: str) -> EngineError:
    """The EngineError for an SGLang abort with an HTTP status."""
    if status == HTTPStatus.BAD_REQUEST:
        return EngineError(_bad_request_code(message), message)
    if status in (HTTPStatus.SERVICE_UNAVAILABLE, HTTPStatus.TOO_MANY_REQUESTS):
        return EngineError(ErrorCode.OVERLOADED, message)
    return EngineError(ErrorCode.ENGINE_ERROR, message)


def error_from_exception(exc: Exception) -> EngineError:
    """SGLang raises ValueError for requests it rejects before scheduling (too long, bad params)."""
    if isinstance(exc, EngineError):
        return exc
    if isinstance(exc, ValueError):
        return EngineError(_bad_request_code(str(exc)), str(exc))
    return EngineError(ErrorCode.ENGINE_ERROR, f"{type(exc).__name__}: {exc}")


def _bad_request_code(message: str) -> str:
    text = message.lower()
    if "context length" in text or "longer than" in text or "too long" in text:
        return ErrorCode.CONTEXT_LENGTH
    return ErrorCode.BAD_REQUEST


def usage_of(meta: dict[str, Any]) -> Usage:
    return Usage(prompt_tokens=int(meta.get("prompt_tokens") or 0),
                 completion_tokens=int(meta.get("completion_tokens") or 0),
                 cached_tokens=int(meta.get("cached_tokens") or 0))


def _logprobs(entries: Sequence[Any] | None, start: int, n: int) -> list[float] | None:
    """Logprobs of the new tokens from SGLang's [(logprob, token_id, text), ...]."""
    if entries is None or n == 0:
        return None
    return [float(e[0]) for e in entries[start : start + n]]


def _top_logprobs(entries: Sequence[Any] | None, start: int, n: int) -> list[list[TopLogprob]] | None:
    """Per new token, its top alternatives from SGLang's [[(logprob, token_id, text), ...] | None, ...]."""
    if entries is None or n == 0:
        return None
    return [[TopLogprob(int(t[1]), float(t[0])) for t in (pos or ())] for pos in entries[start : start + n]]
