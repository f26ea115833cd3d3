"""The small endpoints' routes (tokenize, detokenize, rerank, score), for FrontendApp's route table.

Each path is served under /v1/ and under the bare path SGLang and vLLM also use (and /v2/rerank,
Cohere's v2 path); the bare paths ask for the API key as /v1/ ones do (`API_PATHS`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import msgspec

from services.frontend.dispatch import Dispatcher
from services.frontend.models import ModelRegistry
from services.frontend.rerank import DEFAULT_MAX_RERANK_DOCUMENTS, RerankRequest, RerankRoutes, ScoreApiRequest
from services.frontend.tokenize_route import DetokenizeRequest, TokenizeRequest, TokenizeRoutes
from shared.http import Request, Response

Handler = Callable[[Request], Awaitable[Response]]
API_PATHS = frozenset({"/tokenize", "/detokenize", "/rerank", "/score", "/v2/rerank"})
__all__ = ["API_PATHS", "DEFAULT_MAX_RERANK_DOCUMENTS", "openapi_parts", "small_routes"]


def small_routes(registry: ModelRegistry, dispatcher: Dispatcher, max_rerank_documents: int,
                 counted: Callable[[Handler, Request], Awaitable[Response]], direct_header: str | None = None
                 ) -> dict[tuple[str, str], Handler]:
    """`counted(handler, req)` runs a handler counted in flight (the routes that reach a worker)."""
    tok = TokenizeRoutes(registry)
    scoring = RerankRoutes(registry, dispatcher, max_rerank_documents, direct_header)

    async def rerank(req: Request) -> Response:
        return await counted(scoring.rerank, req)

    async def score(req: Request) -> Response:
        return await counted(scoring.score, req)

    routes: dict[tuple[str, str], Handler] = {}
    for path, handler in (("/tokenize", tok.tokenize), ("/detokenize", tok.detokenize), ("/rerank", rerank),
                          ("/score", score)):
        routes[("POST", path)] = handler
        routes[("POST", "/v1" + path)] = handler
    routes[("POST", "/v2/rerank")] = rerank
    return routes


def openapi_parts(ref_template: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(paths, component schemas) of the small endpoints, for /openapi.json (services.frontend.openapi)."""
    types = {"/v1/tokenize": TokenizeRequest, "/v1/detokenize": DetokenizeRequest, "/v1/rerank": RerankRequest,
             "/v1/score": ScoreApiRequest}
    _, components = msgspec.json.schema_components(list(types.values()), ref_template=ref_template)
    ok = {"description": "OK", "content": {"application/json": {"schema": {"type": "object"}}}}
    paths = {path: {"post": {"requestBody": {"required": True, "content": {"application/json": {"schema": {
        "$ref": ref_template.format(name=kind.__name__)}}}}, "responses": {"200": ok}}} for path, kind in types.items()}
    return paths, components
