"""OpenAI request -> engine request: chat template, tokenization, sampling, limits."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import msgspec

from protocol.messages import (
    EngineRequest,
    ErrorCode,
    Grammar,
    OutputOptions,
    RoutingHints,
    SamplingOptions,
    StopConditions,
)
from protocol.multimodal import ImageItem
from services.frontend.openai_types import ChatCompletionRequest, CompletionRequest, _Common
from shared.errors import BadRequest
from shared.tokenizer import Tokenizer
from shared.tokenizer.fim import fim_prompt, fim_sentinels

# longer prompts are tokenized in a thread, which releases the GIL (about 0.5 ms of work inline at most)
THREAD_TOKENIZE_CHARS = 2_000
DEFAULT_COMPLETION_MAX_TOKENS = StopConditions().max_tokens  # 16, as OpenAI's completions API


@dataclass
class Prepared:
    request: EngineRequest
    prompt_text: str | None
    stops: list[str]
    include_usage: bool
    logprobs: int | None  # None: none; k >= 0 top alternatives
    prompt_tokens: int = 0  # what usage reports: each image counts as the tokens it becomes
    echo: str = ""  # completions with echo: the prompt text, sent before the completion
    continuous_usage: bool = False  # stream_options.continuous_usage_stats


def _stops(stop: str | list[str] | None) -> list[str]:
    if stop is None:
        return []
    stops = [stop] if isinstance(stop, str) else list(stop)
    if any(not s for s in stops):
        raise BadRequest("stop strings must not be empty", "stop")
    return stops


def _logit_bias(bias: dict[str, float] | None, vocab_size: int) -> dict[int, float]:
    out: dict[int, float] = {}
    for key, value in (bias or {}).items():
        try:
            token = int(key)
        except ValueError:
            raise BadRequest(f"logit_bias keys are token ids; {key!r} is not one", "logit_bias") from None
        if not 0 <= token < vocab_size:
            raise BadRequest(f"logit_bias token id {token} is outside the vocabulary", "logit_bias")
        out[token] = value
    return out


def _sampling(req: _Common, vocab_size: int) -> SamplingOptions:
    kw: dict[str, object] = {"logit_bias": _logit_bias(req.logit_bias, vocab_size)}
    for name in ("temperature", "top_p", "top_k", "min_p", "seed", "repetition_penalty",
                 "frequency_penalty", "presence_penalty"):
        value = getattr(req, name)
        if value is not None:
            kw[name] = value
    if "top_k" in kw and kw["top_k"] == 0:
        kw["top_k"] = -1
    return SamplingOptions(**kw)  # type: ignore[arg-type]


def _chat_text(tok: Tokenizer, req: ChatCompletionRequest, image_token: str | None = None) -> tuple[str, list[str]]:
    """The prompt text, and the image URLs in order (each image part becomes `image_token` in the text)."""
    messages = [msgspec.to_builtins(m) for m in req.messages]
    urls: list[str] = []
    for m in messages:
        if isinstance(m.get("content"), list):
            m["content"] = [_content_part(p, image_token, urls) for p in m["content"]]
    try:
        text = tok.apply_chat_template(messages, add_generation_prompt=True, tools=req.tools,
                                       **(req.chat_template_kwargs or {}))
    except Exception as e:  # a template's raise_exception, or a malformed conversation
        raise BadRequest(f"chat template failed: {e}", "messages") from e
    return text, urls


def _content_part(part: dict[str, object], image_token: str | None, urls: list[str]) -> dict[str, object]:
    kind = part.get("type")
    if kind == "text":
        return part
    if kind != "image_url":
        raise BadRequest(f"content parts of type {kind!r} are not supported", "messages")
    if image_token is None:
        raise BadRequest("this model does not take images (only text content parts)", "messages")
    spec = part.get("image_url")
    url = spec.get("url") if isinstance(spec, dict) else None
    if not isinstance(url, str) or not url:
        raise BadRequest("an image_url content part needs image_url.url", "messages")
    urls.append(url)
    return {"type": "text", "text": image_token}


async def _encode(tok: Tokenizer, text: str) -> list[int]:
    if len(text) > THREAD_TOKENIZE_CHARS:
        return await asyncio.to_thread(tok.encode, text)
    return tok.encode(text)


async def prepare(
    tok: Tokenizer,
    req: ChatCompletionRequest | CompletionRequest,
    request_id: str,
    context_length: int,
    max_prompt_tokens: int | None = None,
    image_input: tuple[str, int] | None = None,
    *,
    grammar: Grammar | None = None,
    lora: str = "",
    session: str = "",
) -> Prepared:
    """The prompt tokenized once and the one EngineRequest built from it. `image_input`: (image token,
    tokens per image) of a model that takes images; `grammar`: the agent plan's; `session`: the client's."""
    urls: list[str] = []
    if isinstance(req, ChatCompletionRequest):
        text, urls = _chat_text(tok, req, image_input[0] if image_input else None)
        ids = await _encode(tok, text)
        max_tokens = req.max_completion_tokens or req.max_tokens
        logprobs = (req.top_logprobs or 0) if req.logprobs else None
    else:
        prompt = req.prompt
        if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], list):
            prompt = prompt[0]  # a batch of one token list
        if isinstance(prompt, list) and all(isinstance(x, int) for x in prompt):
            text, ids = None, list(prompt)  # type: ignore[arg-type]
            if any(i < 0 or i >= tok.vocab_size for i in ids):
                raise BadRequest("prompt token id out of the vocabulary", "prompt")
            if req.suffix is not None:
                raise BadRequest("suffix needs a text prompt", "suffix")
        elif isinstance(prompt, str) or (len(prompt) == 1 and isinstance(prompt[0], str)):
            text = prompt if isinstance(prompt, str) else prompt[0]
            ids = await _encode(tok, text if req.suffix is None else _fill_in_the_middle(tok, text, req.suffix))
        else:
            raise BadRequest("prompt must be a string, a list of one string, a list of token ids, or a list of one "
                             "list of token ids", "prompt")
        max_tokens = DEFAULT_COMPLETION_MAX_TOKENS if req.max_tokens is None else req.max_tokens
        if max_tokens == 0 and not req.echo:
            raise BadRequest("max_tokens 0 needs echo: true (it scores the prompt, generating nothing)", "max_tokens")
        logprobs = req.logprobs
    if not ids:
        raise BadRequest("the prompt is empty", "prompt")
    n = len(ids)
    if urls and image_input is not None:
        placeholders = ids.count(tok.token_to_id(image_input[0]) or -1)
        if placeholders != len(urls):
            raise BadRequest(f"the prompt has {placeholders} image placeholders for {len(urls)} images "
                             f"(is {image_input[0]!r} in the text?)", "messages")
        n += len(urls) * max(0, image_input[1] - 1)  # each image becomes image_input[1] tokens
    if max_prompt_tokens is not None and n > max_prompt_tokens:
        raise BadRequest(f"prompt has {n} tokens; this server accepts at most {max_prompt_tokens}",
                         "messages", ErrorCode.CONTEXT_LENGTH)
    if max_tokens is None:
        max_tokens = context_length - n
    if n + max_tokens > context_length:
        raise BadRequest(
            f"This model's maximum context length is {context_length} tokens. However, you requested "
            f"{n + max_tokens} tokens ({n} in the messages, {max_tokens} in the completion).",
            "max_tokens", ErrorCode.CONTEXT_LENGTH)
    if req.min_tokens > max_tokens:
        raise BadRequest("min_tokens must not exceed max_tokens", "min_tokens")
    stop = StopConditions(
        max_tokens=max_tokens, min_tokens=req.min_tokens, stop_token_ids=list(req.stop_token_ids or []),
        ignore_eos=req.ignore_eos,
    )
    engine_req = EngineRequest(
        request_id=request_id, token_ids=ids, model=req.model, sampling=_sampling(req, tok.vocab_size), stop=stop,
        output=OutputOptions(logprobs=logprobs, prompt_logprobs=_prompt_logprobs(req)),
        multimodal=[ImageItem(url=u) for u in urls], priority=req.priority,
        grammar=grammar, lora=lora, routing=RoutingHints(session_id=session),
    )
    opts = req.stream_options
    include_usage = bool(opts and opts.include_usage)
    return Prepared(engine_req, text, _stops(req.stop), include_usage, logprobs, n, _echo(tok, req, text, ids),
                    bool(opts and opts.continuous_usage_stats))


def _fill_in_the_middle(tok: Tokenizer, prefix: str, suffix: str) -> str:
    sentinels = fim_sentinels(tok)
    if sentinels is None:
        raise BadRequest("suffix needs a fill-in-the-middle model; this model's tokenizer has no FIM tokens",
                         "suffix")
    return fim_prompt(sentinels, prefix, suffix)


def _prompt_logprobs(req: ChatCompletionRequest | CompletionRequest) -> int | None:
    """Completions' echo with logprobs asks the engine for the prompt's (services.frontend.prompt_logprobs)."""
    return req.logprobs if isinstance(req, CompletionRequest) and req.echo else None


def _echo(tok: Tokenizer, req: ChatCompletionRequest | CompletionRequest, text: str | None, ids: list[int]) -> str:
    if not isinstance(req, CompletionRequest) or not req.echo:
        return ""
    return text if text is not None else tok.decode(ids)
