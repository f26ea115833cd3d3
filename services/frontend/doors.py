"""The front doors that generate: each decodes its API's body into the request the pipeline runs
(chat or completions) and names the renderer of the step stream and its error shape.

    DOORS["/v1/messages"].decode(raw, ignore_unknown)   # (pipeline request, the API's own request) or Failed
    DOORS["/v1/messages"].renderer(job, own)            # services.frontend.render.Renderer

A new generation API is one more FrontDoor here (and its route in services.frontend.app).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgspec

from services.frontend.fields import REFUSED, check_fields
from services.frontend.http_errors import openai_error
from services.frontend.messages_api import anthropic_error, decode_count, decode_messages
from services.frontend.openai_types import ChatCompletionRequest, CompletionRequest
from services.frontend.pipeline import Failed, GenerateRequest, Job, error_step, refused
from services.frontend.render import Renderer
from services.frontend.render_chat import ChatRenderer
from services.frontend.render_completions import CompletionsRenderer
from services.frontend.render_messages import MessagesRenderer
from services.frontend.render_responses import ResponsesRenderer
from services.frontend.responses_api import ResponsesRequest, parse_request, to_chat
from services.frontend.steps import ErrorStep
from shared.errors import BadRequest
from shared.http import Response

Decoded = tuple[GenerateRequest, Any]


@dataclass(frozen=True)
class FrontDoor:
    prefix: str  # of the request id
    decode: Callable[[bytes, bool], Decoded]  # raises BadRequest or Failed
    renderer: Callable[[Job, Any], Renderer]
    error: Callable[[ErrorStep], Response]

    def parse(self, raw: bytes, ignore_unknown: bool) -> Decoded:
        try:
            return self.decode(raw, ignore_unknown)
        except BadRequest as e:
            raise Failed(error_step(e)) from e
        except (AttributeError, TypeError, KeyError, ValueError) as e:  # a nested value of the wrong shape
            raise refused(400, "the request body does not have the shapes this API defines (a block, item, "
                               "part or option of the wrong type)", "invalid_request") from e


def openai_body(raw: bytes, kind: type[GenerateRequest], ignore_unknown: bool) -> GenerateRequest:
    raw = check_fields(raw, kind, ignore_unknown)
    try:
        return msgspec.json.decode(raw, type=kind)
    except msgspec.ValidationError as e:
        raise refused(400, f"invalid request: {e}", "invalid_request") from e
    except msgspec.DecodeError as e:
        raise refused(400, f"invalid JSON body: {e}", "invalid_json") from e


def _chat(raw: bytes, ignore_unknown: bool) -> Decoded:
    body = openai_body(raw, ChatCompletionRequest, ignore_unknown)
    return body, body


def _completions(raw: bytes, ignore_unknown: bool) -> Decoded:
    body = openai_body(raw, CompletionRequest, ignore_unknown)
    return body, body


def _responses(raw: bytes, ignore_unknown: bool) -> Decoded:
    req = parse_request(raw, ignore_unknown)
    try:
        chat = to_chat(req)
    except (AttributeError, TypeError, KeyError, ValueError) as e:  # an item, part or format of the wrong shape
        raise refused(400, "input items, their content parts, tools, text.format or reasoning do not have the "
                           "shapes of the Responses API", "invalid_request", "input") from e
    for name, (allowed, why) in REFUSED.items():  # what the chat route refuses (e.g. a reasoning effort)
        if name in chat and not allowed(chat[name]):
            raise BadRequest(f"{name}: {why}", name)
    try:
        return msgspec.convert(chat, ChatCompletionRequest), req
    except msgspec.ValidationError as e:
        raise BadRequest(f"invalid request: {e}") from e


def _responses_renderer(job: Job, req: ResponsesRequest) -> Renderer:
    return ResponsesRenderer(job, req)


DOORS: dict[str, FrontDoor] = {
    "/v1/chat/completions": FrontDoor("chatcmpl", _chat, lambda job, _: ChatRenderer(job), openai_error),
    "/v1/completions": FrontDoor("cmpl", _completions, lambda job, _: CompletionsRenderer(job), openai_error),
    "/v1/responses": FrontDoor("resp", _responses, _responses_renderer, openai_error),
    "/v1/messages": FrontDoor("msg", decode_messages, lambda job, req: MessagesRenderer(job, req), anthropic_error),
}
COUNT_TOKENS = FrontDoor("count", decode_count, lambda job, req: MessagesRenderer(job, req), anthropic_error)
