"""The OpenAPI document at /openapi.json, generated from the msgspec request/response types."""

from __future__ import annotations

from typing import Any

import msgspec

from services.frontend import openai_types as t
from services.frontend.responses_api import ResponsesRequest
from services.frontend.small_routes import openapi_parts

_REF = "#/components/schemas/{name}"


def _body(name: str) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": {"$ref": _REF.format(name=name)}}}}


def _ok(name: str, stream: bool = False) -> dict[str, Any]:
    content: dict[str, Any] = {"application/json": {"schema": {"$ref": _REF.format(name=name)}}}
    if stream:
        content["text/event-stream"] = {"schema": {"type": "string"}}
    return {"description": "OK", "content": content}


def _errors() -> dict[str, Any]:
    err = {"content": {"application/json": {"schema": {"$ref": _REF.format(name="ErrorResponse")}}}}
    return {str(code): {"description": why, **err} for code, why in (
        (400, "invalid request"), (401, "missing or wrong API key"), (404, "unknown model"),
        (429, "overloaded; see Retry-After"),
        (503, "no worker serving the model, or every worker busy; see Retry-After"))}


def openapi_document() -> dict[str, Any]:
    _, components = msgspec.json.schema_components(
        [t.ChatCompletionRequest, t.CompletionRequest, t.ChatCompletion, t.ChatCompletionChunk, t.Completion,
         t.EmbeddingRequest, t.EmbeddingResponse, t.ModelList, t.ErrorResponse, ResponsesRequest], ref_template=_REF)
    post = {
        "/v1/chat/completions": ("ChatCompletionRequest", "ChatCompletion"),
        "/v1/completions": ("CompletionRequest", "Completion"),
    }
    paths: dict[str, Any] = {
        path: {"post": {"requestBody": _body(req), "responses": {"200": _ok(resp, stream=True), **_errors()}}}
        for path, (req, resp) in post.items()
    }
    paths["/v1/embeddings"] = {"post": {"requestBody": _body("EmbeddingRequest"),
                                        "responses": {"200": _ok("EmbeddingResponse"), **_errors()}}}
    paths["/v1/models"] = {"get": {"responses": {"200": _ok("ModelList")}}}
    response = {"description": "OK", "content": {"application/json": {"schema": {"type": "object"}},
                                                 "text/event-stream": {"schema": {"type": "string"}}}}
    paths["/v1/responses"] = {"post": {"requestBody": _body("ResponsesRequest"),
                                       "responses": {"200": response, **_errors()}}}
    small_paths, small_schemas = openapi_parts(_REF)  # tokenize, detokenize, rerank, score
    paths.update(small_paths)
    components.update(small_schemas)
    return {
        "openapi": "3.1.0",
        "info": {"title": "shoal OpenAI-compatible API", "version": "1"},
        "paths": paths,
        "components": {"schemas": components,
                       "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
    }
