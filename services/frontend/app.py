"""The OpenAI-compatible HTTP surface: routing, auth, errors, SSE framing."""

from __future__ import annotations

import hmac
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import msgspec

from protocol.messages import ErrorCode, OutputChunk
from services.frontend.admission_hook import with_admission
from services.frontend.agents import with_agents
from services.frontend.choices import Choices
from services.frontend.cold_start import ColdStart
from services.frontend.dispatch import Dispatcher
from services.frontend.embeddings import EmbeddingsRoute
from services.frontend.fields import check_fields
from services.frontend.lora import LoraRoutes
from services.frontend.models import ModelEntry, ModelRegistry, resolve
from services.frontend.openai_types import (
    ChatCompletionRequest,
    CompletionRequest,
    ModelList,
)
from services.frontend.openai_types import (
    ModelEntry as ModelListEntry,
)
from services.frontend.openapi import openapi_document
from services.frontend.postprocess import OutputState, Step, merge_steps
from services.frontend.preprocess import BadRequest, Prepared, prepare
from services.frontend.responses import SSE_DONE, WORKER_HEADER, decode_body, json_encoder, sse_error
from services.frontend.responses import error_response as _error
from services.frontend.responses import failure_response as _failure
from services.frontend.responses_api import parse_request, to_chat
from services.frontend.responses_stream import answer
from services.frontend.session import SESSION_HEADER, with_session
from services.frontend.shapes import ChoiceChunks, new_state, usage_event, whole_response
from shared.http import Request, Response, StreamingResponse
from shared.routing.session_key import prefix_session
from shared.runtime.errors import RuntimeFailure
from shared.telemetry.logging import get_logger
from shared.telemetry.metrics import counter, gauge, histogram, render_metrics
from shared.telemetry.tracing import inject_headers, span

log = get_logger("shoal.frontend")
_json = json_encoder
_DONE = SSE_DONE

REQUESTS = counter("shoal_frontend_requests_total", "HTTP requests by route and status", ["route", "status"])
INFLIGHT = gauge("shoal_frontend_inflight_requests", "Requests being served now")
TTFT = histogram("shoal_frontend_ttft_seconds", "Time to first token", [],
                 buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))


@dataclass(frozen=True)
class FrontendOptions:
    api_key: str | None = None
    max_inflight: int = 4096
    max_prompt_tokens: int | None = None
    direct_header: str = "x-shoal-instance-id"
    router_mode: str = "round-robin"
    ignore_unknown_fields: bool = False
    tool_call_parser: str | None = None  # override the model card's
    reasoning_parser: str | None = None
    session_from: str = "header"  # --router-session-affinity-from (shared.routing.session_key)
    tenant_header: str = ""  # --tenant-header (services.frontend.admission_hook)


class FrontendApp:
    def __init__(self, registry: ModelRegistry, dispatcher: Dispatcher, opts: FrontendOptions) -> None:
        self.registry = registry
        self.dispatcher = dispatcher
        self.opts = opts
        self.inflight = 0
        self.cold_start: ColdStart | None = None  # scale from zero: main.py sets it (cold_start.py)
        self._lora = LoraRoutes(registry)
        self._routes: dict[tuple[str, str], Callable[[Request], Awaitable[Response | StreamingResponse]]] = {
            ("POST", "/v1/chat/completions"): self.chat,
            ("POST", "/v1/completions"): self.completions,
            ("POST", "/v1/embeddings"): self.embeddings,
            ("POST", "/v1/responses"): self.responses,
            ("GET", "/v1/models"): self.list_models,
            ("POST", "/v1/load_lora_adapter"): self._lora.load,
            ("POST", "/v1/unload_lora_adapter"): self._lora.unload,
            ("GET", "/health"): self.health,
            ("GET", "/live"): self.health,
            ("GET", "/metrics"): self.metrics,
            ("GET", "/openapi.json"): self.openapi,
        }
        self._openapi = _json.encode(openapi_document())
        self._embeddings = EmbeddingsRoute(registry, dispatcher, opts.max_prompt_tokens,
                                           opts.direct_header if opts.router_mode == "direct" else None)

    async def __call__(self, req: Request) -> Response | StreamingResponse:
        # HEAD is GET without the body (the connection sends the head only)
        route = self._routes.get(("GET" if req.method == "HEAD" else req.method, req.path))
        if route is None:
            known = any(path == req.path for _, path in self._routes)
            resp: Response | StreamingResponse = (_error(405, f"method {req.method} not allowed") if known
                                                  else _error(404, f"no route {req.path}"))
        elif req.path.startswith("/v1/") and not self._authorized(req):
            resp = _error(401, "missing or invalid API key", "invalid_api_key")
        else:
            resp = await route(req)
        REQUESTS.labels(req.path if route else "other", str(resp.status)).inc()
        return resp

    def _authorized(self, req: Request) -> bool:
        if self.opts.api_key is None:
            return True
        got = req.headers.get("authorization", "")
        return got.startswith("Bearer ") and hmac.compare_digest(got[7:].encode(), self.opts.api_key.encode())

    # ---- simple routes ---------------------------------------------------------------
    async def health(self, req: Request) -> Response:
        models = [m.name for m in self.registry.serving()]
        instances = sum(len(m.candidates()) for m in self.registry.serving())
        body = _json.encode({"status": "ok" if models else "no_workers", "models": models,
                             "instances": instances, "inflight": self.inflight})
        return Response(200, body)

    async def metrics(self, req: Request) -> Response:
        body, ctype = render_metrics()
        return Response(200, body, content_type=ctype)

    async def openapi(self, req: Request) -> Response:
        return Response(200, self._openapi)

    async def list_models(self, req: Request) -> Response:
        data = [ModelListEntry(id=m.name, created=m.created) for m in self.registry.serving()]
        data += [ModelListEntry(id=a, created=m.created, parent=m.name) for m in self.registry.serving()
                 for a in m.loras]
        return Response(200, _json.encode(ModelList(data)))

    async def embeddings(self, req: Request) -> Response:
        if self.inflight >= self.opts.max_inflight:
            return _error(429, "too many requests in flight; retry later", "overloaded", retry_after=1.0)
        self.inflight += 1
        INFLIGHT.inc()
        try:
            return await self._embeddings(req)
        finally:
            self.inflight -= 1
            INFLIGHT.dec()

    # ---- generation routes -----------------------------------------------------------
    async def chat(self, req: Request) -> Response | StreamingResponse:
        return await self._generate(req, ChatCompletionRequest, "chatcmpl")

    async def completions(self, req: Request) -> Response | StreamingResponse:
        return await self._generate(req, CompletionRequest, "cmpl")

    async def responses(self, req: Request) -> Response | StreamingResponse:
        """/v1/responses, translated to and from the chat path (services.frontend.responses_api)."""
        try:
            parsed = parse_request(req.body, self.opts.ignore_unknown_fields)
            req.body = _json.encode(to_chat(parsed))  # the same Request: a client leaving still ends the chat
        except BadRequest as e:
            return _failure(e)
        return answer(parsed, await self.chat(req))

    async def _generate(self, req: Request, kind: type, prefix: str) -> Response | StreamingResponse:
        try:
            raw = check_fields(req.body, kind, self.opts.ignore_unknown_fields)
        except BadRequest as e:
            return _failure(e)
        body = decode_body(raw, kind)
        if isinstance(body, Response):
            return body
        model, lora = resolve(self.registry.models, body.model)
        if model is not None and model.is_embedding:
            return _error(400, f"The model `{body.model}` is an embedding model; it serves /v1/embeddings, "
                               "not chat or completions.", "model_not_generative", "model")
        if model is not None and not model.candidates(lora) and self.cold_start is not None:
            refused = await self.cold_start.wait(model, lora)  # a parked model: a worker starts, or 503
            if refused is not None:
                return refused
        if model is None or not model.candidates(lora):
            if model is None:
                return _error(404, f"The model `{body.model}` does not exist.", "model_not_found", "model")
            return _error(503, f"no worker is serving model {body.model!r} right now", "no_workers",
                          retry_after=1.0)
        if self.inflight >= self.opts.max_inflight:
            return _error(429, "too many requests in flight; retry later", "overloaded", retry_after=1.0)
        request_id = f"{prefix}-{secrets.token_hex(12)}"
        try:
            prepared = await prepare(model.tokenizer, body, request_id, model.context_length,
                                     self.opts.max_prompt_tokens, model.image_input)
            if isinstance(body, ChatCompletionRequest):
                await with_agents(prepared, body, model, self.opts.tool_call_parser, self.opts.reasoning_parser)
            prepared.request = with_session(prepared.request, req.headers.get(SESSION_HEADER) or prefix_session(
                getattr(body, "messages", None), self.opts.session_from))
            prepared.request = with_admission(prepared.request, req.headers, self.opts.tenant_header)
        except BadRequest as e:
            return _failure(e)
        if lora:
            prepared.request = msgspec.structs.replace(prepared.request, lora=lora)
        instance = req.headers.get(self.opts.direct_header) if self.opts.router_mode == "direct" else None
        if self.opts.router_mode == "direct" and not instance:
            return _error(400, f"router mode is direct: send the worker in header {self.opts.direct_header}")
        chat = isinstance(body, ChatCompletionRequest)
        if body.user is not None:
            log.info("request_user", request_id=request_id, user=body.user)
        if body.n > 1:
            return await self._run_choices(model, prepared, instance, chat, body.stream, body.n)
        return await self._run(req, model, prepared, instance, chat=chat, stream=body.stream, user=body.user)

    def _admit(self) -> Callable[[], None]:
        """Count a request in flight; the returned release (idempotent) counts it out."""
        self.inflight += 1
        INFLIGHT.inc()
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                self.inflight -= 1
                INFLIGHT.dec()

        return release

    async def _run_choices(self, model: ModelEntry, p: Prepared, instance: str | None, chat: bool, stream: bool,
                           n: int) -> Response | StreamingResponse:
        """`n` > 1 (services.frontend.choices); counts as one request in flight."""
        release = self._admit()
        choices = Choices(self.dispatcher, model, p, instance, n)
        if not stream:
            try:
                return await choices.whole(chat)
            finally:
                release()
        return StreamingResponse(200, choices.stream(chat, release))

    async def _run(self, req: Request, model: ModelEntry, p: Prepared, instance: str | None,
                   chat: bool, stream: bool, user: str | None = None) -> Response | StreamingResponse:
        started = time.monotonic()
        release = self._admit()
        attributes: dict[str, str | int] = {"request_id": p.request.request_id, "model": model.name,
                                            "prompt_tokens": len(p.request.token_ids)}
        if user is not None:
            attributes["user"] = user  # OpenAI's end-user id, for tracing abuse back
        with span("frontend.request", attributes=attributes):
            headers = inject_headers({})
            served: dict[str, str] = {}
            batches = self.dispatcher.stream(model, p.request, instance, headers, served)
        try:
            first = await anext(batches)
        except RuntimeFailure as e:
            release()
            await batches.aclose()
            return _failure(e)
        except StopAsyncIteration:
            release()
            return _error(502, "the worker ended the stream without output", ErrorCode.WORKER_LOST.value)
        except BaseException:
            release()
            await batches.aclose()
            raise
        TTFT.observe(time.monotonic() - started)
        state = new_state(model, p)
        worker = [(WORKER_HEADER, served.get("instance_id", ""))]
        if not stream:
            try:
                resp = await self._whole(model, p, state, first, batches, chat)
                resp.headers = [*(resp.headers or []), *worker]
                return resp
            finally:
                release()
        return StreamingResponse(200, self._sse(model, p, state, first, batches, chat, release), headers=worker)

    async def _whole(self, model: ModelEntry, p: Prepared, state: OutputState, first: list[OutputChunk],
                     batches: AsyncIterator[list[OutputChunk]], chat: bool) -> Response:
        text: list[str] = []
        steps: list[Step] = []
        try:
            items: list[OutputChunk] | None = first
            while items is not None:
                step = state.feed(items)
                text.append(step.text)
                steps.append(step)
                if state.finish_reason is not None:
                    break
                items = await anext(batches, None)
        except RuntimeFailure as e:
            return _failure(e)
        finally:
            await batches.aclose()  # type: ignore[attr-defined]
        body = whole_response(chat, p.request.request_id, int(time.time()), model.name,
                              [("".join(text), merge_steps(steps), state)], state.usage())
        return Response(200, body)

    async def _sse(self, model: ModelEntry, p: Prepared, state: OutputState, first: list[OutputChunk],
                   batches: AsyncIterator[list[OutputChunk]], chat: bool,
                   release: Callable[[], None]) -> AsyncIterator[bytes]:
        rid, created, name = p.request.request_id, int(time.time()), model.name
        chunks = ChoiceChunks(chat, rid, created, name, 0, state)
        try:
            items: list[OutputChunk] | None = first
            while items is not None:
                step = state.feed(items)
                out = chunks.event(step)
                if step.finish_reason is not None:
                    if p.include_usage:
                        out += usage_event(chat, rid, created, name, state.usage())
                    yield out + _DONE
                    return
                if out:
                    yield out
                items = await anext(batches, None)
            yield _DONE
        except RuntimeFailure as e:
            yield sse_error(e)
        finally:
            release()
            await batches.aclose()  # type: ignore[attr-defined]

