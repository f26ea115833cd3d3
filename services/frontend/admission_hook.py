"""Who sent a request and until when it waits: the admission queue's tenant and deadline (shared.routing.admission).

tenant    the `--tenant-header` header's value when set and present, else a hash of the API key
          (Authorization: Bearer ...), else "" (the default tenant)
deadline  `x-request-deadline: <unix seconds>`, `x-request-timeout: <seconds from now>` or the body's
          `timeout` (seconds from now); with several, the earliest. One already past, or a timeout that is
          not a positive finite number, is a 400 (it fails alone, before anything is queued or sent)
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Mapping

import msgspec

from protocol.messages import EngineRequest
from shared.errors import BadRequest

DEADLINE_HEADER = "x-request-deadline"
TIMEOUT_HEADER = "x-request-timeout"
MAX_TENANT = 128


def with_admission(request: EngineRequest, headers: Mapping[str, str], tenant_header: str = "",
                   timeout: float | None = None) -> EngineRequest:
    """The request with its tenant and queue deadline (`timeout`: the body's field, seconds from now)."""
    tenant = _tenant(headers, tenant_header)
    deadline = _deadline(headers)
    if timeout is not None:
        if not math.isfinite(timeout) or timeout <= 0:
            raise BadRequest(f"timeout is the seconds the request may wait to be admitted: a positive number, "
                             f"not {timeout!r}", "timeout")
        by_body = time.time() + timeout
        deadline = min(deadline, by_body) if deadline else by_body
    if not tenant and not deadline:
        return request
    routing = msgspec.structs.replace(request.routing, tenant=tenant, deadline=deadline)
    return msgspec.structs.replace(request, routing=routing)


def _tenant(headers: Mapping[str, str], tenant_header: str) -> str:
    if tenant_header:
        named = headers.get(tenant_header.lower(), "")
        if named:
            if len(named) > MAX_TENANT:
                raise BadRequest(f"header {tenant_header} is longer than {MAX_TENANT} characters")
            return named
    auth = headers.get("authorization", "")
    if auth.lower().startswith("bearer ") and auth[7:].strip():
        return "key:" + hashlib.blake2b(auth[7:].strip().encode(), digest_size=8).hexdigest()
    return ""


def _deadline(headers: Mapping[str, str]) -> float:
    now = time.time()
    for name, relative in ((DEADLINE_HEADER, False), (TIMEOUT_HEADER, True)):
        raw = headers.get(name)
        if raw is None:
            continue
        try:
            value = float(raw)
        except ValueError:
            raise BadRequest(f"header {name} must be a number of seconds, not {raw[:40]!r}") from None
        if not math.isfinite(value):
            raise BadRequest(f"header {name} must be a finite number of seconds")
        deadline = now + value if relative else value
        if deadline <= now:
            raise BadRequest(f"header {name}: the deadline has already passed")
        return deadline
    return 0.0
