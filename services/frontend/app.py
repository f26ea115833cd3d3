"""The HTTP surface: the route table, the request gate (services.frontend.limits: Host, content type,
JSON shape, auth by Bearer or x-api-key) and the simple routes; generation goes through one pipeline
(services.frontend.pipeline) and a renderer per API (services.frontend.doors). Every refusal here is in
the API's own error shape (Anthropic's on /v1/messages, OpenAI's elsewhere)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from services.frontend.dispatch import Dispatcher
from services.frontend.doors import COUNT_TOKENS, DOORS
from services.frontend.embeddings import EmbeddingsRoute
from services.frontend.http_errors import error_response as _error
from services.frontend.http_errors import json_encoder as _json
from services.frontend.http_errors import openai_error
from services.frontend.lora import LoraRoutes
from services.frontend.models import ModelRegistry
from services.frontend.openai_types import ModelEntry as ModelListEntry
from services.frontend.openai_types import ModelList
from services.frontend.openapi import openapi_document
from services.frontend.options import FrontendOptions
from services.frontend.pipeline import Failed, Pipeline
from services.frontend.render import respond
from services.frontend.small_routes import API_PATHS, small_routes
from services.frontend.steps import ErrorStep
from shared.http import Request, Response, StreamingResponse
from shared.telemetry.metrics import counter, render_metrics

__all__ = ["FrontendApp", "FrontendOptions"]

REQUESTS = counter("shoal_frontend_requests_total", "HTTP requests by route and status", ["route", "status"])


class FrontendApp:
    def __init__(self, registry: ModelRegistry, dispatcher: Dispatcher, opts: FrontendOptions) -> None:
        self.registry = registry
        self.dispatcher = dispatcher
        self.opts = opts
        self.pipeline = Pipeline(registry, dispatcher, opts)
        self._lora = LoraRoutes(registry, opts.lora_admin)
        self._gate = self.pipeline.gate
        self._routes: dict[tuple[str, str], Callable[[Request], Awaitable[Response | StreamingResponse]]] = {
            **{("POST", path): self.generate for path in DOORS},
            ("POST", "/v1/messages/count_tokens"): self.count_tokens,
            ("POST", "/v1/embeddings"): self.embeddings,
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
                                           opts.direct_header if opts.direct else None, opts.limits.max_prompt_bytes)
        self._routes.update(small_routes(registry, dispatcher, opts.max_rerank_documents, self._counted,
                                         opts.direct_header if opts.direct else None))

    async def __call__(self, req: Request) -> Response | StreamingResponse:
        # HEAD is GET without the body (the connection sends the head only)
        route = self._routes.get(("GET" if req.method == "HEAD" else req.method, req.path))
        refused = self._gate.http(req) or (await self._gate.body(req.body) if route and req.method == "POST" else None)
        if refused is not None:
            resp: Response | StreamingResponse = _refusal(req.path, refused)
        elif route is None:
            known = any(path == req.path for _, path in self._routes)
            resp = _error(405, f"method {req.method} not allowed") if known else _error(404, f"no route {req.path}")
        elif (req.path.startswith("/v1/") or req.path in API_PATHS) and not self._lora.owns(req.path) \
                and not self._authorized(req):  # the LoRA routes check their own (admin) key
            resp = _refusal(req.path, ErrorStep(401, "invalid_api_key", "missing or invalid API key"))
        else:
            resp = await route(req)
        REQUESTS.labels(req.path if route else "other", str(resp.status)).inc()
        return resp

    def _authorized(self, req: Request) -> bool:
        return self._gate.authorized(req)

    # ---- simple routes ---------------------------------------------------------------
    async def health(self, req: Request) -> Response:
        models = [m.name for m in self.registry.serving()]
        instances = sum(len(m.candidates()) for m in self.registry.serving())
        body = _json.encode({"status": "ok" if models else "no_workers", "models": models,
                             "instances": instances, "inflight": self.dispatcher.inflight})
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
        return await self._counted(self._embeddings, req)

    async def _counted(self, handler: Callable[[Request], Awaitable[Response]], req: Request) -> Response:
        """A non-generating route's call, counted in flight by the dispatcher (429 beyond --max-inflight)."""
        release = self.dispatcher.admit()
        if release is None:
            return _error(429, "too many requests in flight; retry later", "overloaded", retry_after=1.0)
        try:
            return await handler(req)
        finally:
            release()

    async def count_tokens(self, req: Request) -> Response:
        """/v1/messages/count_tokens: the input_tokens /v1/messages would report (nothing is generated)."""
        door = COUNT_TOKENS
        try:
            body, _ = door.parse(req.body, self.opts.ignore_unknown_fields)
            job = await self.pipeline.prepare(body, req.headers, "count")
        except Failed as f:
            return door.error(f.step)
        return Response(200, _json.encode({"input_tokens": job.prepared.prompt_tokens}))

    # ---- generation routes: one pipeline, a renderer per API (services.frontend.doors) ----------
    async def generate(self, req: Request) -> Response | StreamingResponse:
        door = DOORS[req.path]
        try:
            body, own = door.parse(req.body, self.opts.ignore_unknown_fields)
            job = await self.pipeline.prepare(body, req.headers, door.prefix)
            run = await self.pipeline.start(job)
        except Failed as f:
            return door.error(f.step)
        return await respond(door.renderer(job, own), run, body.stream)


def _refusal(path: str, step: ErrorStep) -> Response:
    """A refusal before any route ran, in the error shape of the API at `path`."""
    door = COUNT_TOKENS if path == "/v1/messages/count_tokens" else DOORS.get(path)
    return door.error(step) if door else openai_error(step)
