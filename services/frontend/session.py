"""The client's session (header `x-session-id`): it rides on the request to every router that picks a
worker for it (shared.routing.affinity keeps a session on its worker)."""

from __future__ import annotations

import msgspec

from protocol.messages import EngineRequest
from shared.errors import BadRequest

SESSION_HEADER = "x-session-id"
MAX_SESSION_ID = 256  # characters: the routers keep every live session id in memory


def session_id(header: str | None) -> str:
    """The session the header names ("" for none); BadRequest when it is too long to keep."""
    if header and len(header) > MAX_SESSION_ID:
        raise BadRequest(f"header {SESSION_HEADER} is longer than {MAX_SESSION_ID} characters")
    return header or ""


def with_session(request: EngineRequest, value: str | None) -> EngineRequest:
    """`request` carrying session `value` (the header's value; None or empty: no session)."""
    if not session_id(value):
        return request
    return msgspec.structs.replace(request, routing=msgspec.structs.replace(request.routing, session_id=value))
