"""The client's session (header `x-session-id`): it rides on the request to every router that picks a
worker for it (shared.routing.affinity keeps a session on its worker)."""

from __future__ import annotations

import msgspec

from protocol.messages import EngineRequest
from services.frontend.preprocess import BadRequest

SESSION_HEADER = "x-session-id"
MAX_SESSION_ID = 256  # characters: the routers keep every live session id in memory


def with_session(request: EngineRequest, session_id: str | None) -> EngineRequest:
    """`request` carrying `session_id` (the header's value; None or empty: no session)."""
    if not session_id:
        return request
    if len(session_id) > MAX_SESSION_ID:
        raise BadRequest(f"header {SESSION_HEADER} is longer than {MAX_SESSION_ID} characters")
    return msgspec.structs.replace(request, routing=msgspec.structs.replace(request.routing, session_id=session_id))
