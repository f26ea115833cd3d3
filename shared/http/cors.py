"""CORS for browser clients: preflight answers and the allow-origin header, around any handler.

    handler = Cors(app, CorsPolicy(origins=("https://app.example",)))

A preflight (OPTIONS with Origin and Access-Control-Request-Method) from an allowed origin asking for
an allowed method and headers gets 204 with the Access-Control-Allow-* headers; any other preflight
gets 403 without them, so the browser blocks the request. Other requests from an allowed origin get
Access-Control-Allow-Origin on their response; requests from other origins are served unchanged
(the browser, not the server, withholds the answer from the page).
"""

from __future__ import annotations

from dataclasses import dataclass

from shared.http.request import Request
from shared.http.response import Handler, Response, StreamingResponse

PREFLIGHT_MAX_AGE_S = 600


@dataclass(frozen=True)
class CorsPolicy:
    origins: tuple[str, ...]  # exact origins, or "*" for any
    methods: tuple[str, ...] = ("GET", "HEAD", "POST", "OPTIONS")
    headers: tuple[str, ...] = ("authorization", "content-type")  # request headers a page may send; "*": any

    def allows_origin(self, origin: str) -> bool:
        return "*" in self.origins or origin in self.origins

    def allow_origin_value(self, origin: str) -> str:
        return "*" if self.origins == ("*",) else origin


class Cors:
    def __init__(self, handler: Handler, policy: CorsPolicy) -> None:
        self.handler = handler
        self.policy = policy
        self._methods = {m.upper() for m in policy.methods}
        self._headers = {h.lower() for h in policy.headers}

    async def __call__(self, req: Request) -> Response | StreamingResponse:
        origin = req.headers.get("origin")
        if origin is None:
            return await self.handler(req)
        wanted = req.headers.get("access-control-request-method")
        if req.method == "OPTIONS" and wanted is not None:
            return self._preflight(origin, wanted, req.headers.get("access-control-request-headers", ""))
        resp = await self.handler(req)
        if self.policy.allows_origin(origin):
            resp.headers = [*(resp.headers or []), *self._allow(origin)]
        return resp

    def _preflight(self, origin: str, method: str, headers: str) -> Response:
        asked = {h.strip().lower() for h in headers.split(",") if h.strip()}
        ok = (self.policy.allows_origin(origin) and method.upper() in self._methods
              and ("*" in self._headers or asked <= self._headers))
        if not ok:
            return Response(403, b"", content_type="text/plain", headers=[("vary", "Origin")])
        return Response(204, b"", content_type="text/plain", headers=[
            *self._allow(origin),
            ("access-control-allow-methods", ", ".join(sorted(self._methods))),
            ("access-control-allow-headers", ", ".join(sorted(asked)) if "*" in self._headers
             else ", ".join(sorted(self._headers))),
            ("access-control-max-age", str(PREFLIGHT_MAX_AGE_S))])

    def _allow(self, origin: str) -> list[tuple[str, str]]:
        return [("access-control-allow-origin", self.policy.allow_origin_value(origin)), ("vary", "Origin")]
