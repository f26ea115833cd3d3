"""POST /tokenize and /detokenize (also under /v1/): SGLang's and vLLM's shapes; no worker is involved.

/tokenize takes a `prompt` (a string, or a list of strings: one token list each, as SGLang) or chat
`messages` (the model's chat template applied, `add_generation_prompt` as asked, `tools` and
`chat_template_kwargs` passed to it). `add_special_tokens` defaults to true for a prompt and false for
messages (the template writes its own), as vLLM. The answer: `tokens`, `count`, `max_model_len`, and
`token_strs` when `return_token_strs`. /detokenize takes `tokens` and answers the text as both `prompt`
(vLLM) and `text` (SGLang); special tokens are kept, so tokenize -> detokenize -> tokenize (with
`add_special_tokens: false`) gives back the same ids.
"""

from __future__ import annotations

from typing import Any

import msgspec

from services.frontend.http_errors import decode_body, error_response, json_encoder
from services.frontend.models import ModelEntry, ModelRegistry, resolve
from services.frontend.openai_types import ChatMessage
from shared.http import Request, Response
from shared.tokenizer import Tokenizer

MAX_TOKENIZE_PROMPTS = 2048


class TokenizeRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    model: str | None = None  # optional when one model is served
    prompt: str | list[str] | None = None
    messages: list[ChatMessage] | None = None
    add_special_tokens: bool | None = None  # default: true for a prompt, false for messages
    add_generation_prompt: bool = True
    tools: list[dict[str, Any]] | None = None
    chat_template_kwargs: dict[str, Any] | None = None
    return_token_strs: bool = False


class DetokenizeRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    tokens: list[int]
    model: str | None = None


def model_for(registry: ModelRegistry, name: str | None) -> ModelEntry | Response:
    """The named model (a LoRA name resolves to its base), or the only one served when none is named."""
    if name is None:
        serving = registry.serving()
        if len(serving) == 1:
            return serving[0]
        return error_response(400, "name the model: this server serves "
                                   f"{len(serving)} models", "invalid_request", "model")
    model, _ = resolve(registry.models, name)
    if model is None:
        return error_response(404, f"The model `{name}` does not exist.", "model_not_found", "model")
    return model


class TokenizeRoutes:
    def __init__(self, registry: ModelRegistry) -> None:
        self.registry = registry

    async def tokenize(self, req: Request) -> Response:
        body = decode_body(req.body, TokenizeRequest)
        if isinstance(body, Response):
            return body
        if (body.prompt is None) == (body.messages is None):
            return error_response(400, "send either `prompt` or `messages`", "invalid_request", "prompt")
        model = model_for(self.registry, body.model)
        if isinstance(model, Response):
            return model
        tok = model.tokenizer
        if body.messages is not None:
            if not body.messages:
                return error_response(400, "messages must not be empty", "invalid_request", "messages")
            try:
                text = tok.apply_chat_template([msgspec.to_builtins(m) for m in body.messages],
                                               add_generation_prompt=body.add_generation_prompt, tools=body.tools,
                                               **(body.chat_template_kwargs or {}))
            except Exception as e:  # a template's raise_exception, or a malformed conversation
                return error_response(400, f"chat template failed: {e}", "invalid_request", "messages")
            texts, special = [text], bool(body.add_special_tokens)
        else:
            texts = [body.prompt] if isinstance(body.prompt, str) else list(body.prompt or [])
            special = body.add_special_tokens is not False
            if not texts or len(texts) > MAX_TOKENIZE_PROMPTS:
                return error_response(400, f"prompt must hold 1 to {MAX_TOKENIZE_PROMPTS} strings",
                                      "invalid_request", "prompt")
        ids = tok.encode_batch(texts, special)
        single = not isinstance(body.prompt, list)
        out: dict[str, Any] = {"tokens": ids[0] if single else ids,
                               "count": len(ids[0]) if single else [len(x) for x in ids],
                               "max_model_len": model.context_length}
        if body.return_token_strs:
            strs = [[_token_str(tok, t) for t in x] for x in ids]
            out["token_strs"] = strs[0] if single else strs
        return Response(200, json_encoder.encode(out))

    async def detokenize(self, req: Request) -> Response:
        body = decode_body(req.body, DetokenizeRequest)
        if isinstance(body, Response):
            return body
        model = model_for(self.registry, body.model)
        if isinstance(model, Response):
            return model
        vocab = model.tokenizer.vocab_size
        bad = next((t for t in body.tokens if not 0 <= t < vocab), None)
        if bad is not None:
            return error_response(400, f"token id {bad} is out of the vocabulary (0..{vocab - 1})",
                                  "invalid_request", "tokens")
        text = model.tokenizer.decode(body.tokens, skip_special_tokens=False)
        return Response(200, json_encoder.encode({"prompt": text, "text": text}))


def _token_str(tok: Tokenizer, token_id: int) -> str:
    return tok.id_to_token(token_id) or ""
