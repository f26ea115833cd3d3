"""The NATS connection: reconnects with back-off; a clear error when NATS is down."""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from typing import Any

import nats
from nats.aio.client import Client as NATS

from shared.runtime.errors import NatsUnavailable
from shared.telemetry.logging import get_logger

log = get_logger("shoal.runtime")


@dataclass(frozen=True)
class NatsAuth:
    """Connection options; secrets are never logged (repr hides them)."""

    url: str = "nats://127.0.0.1:4222"
    creds: str | None = None
    user: str | None = None
    password: str | None = None
    token: str | None = None
    nkey_seed: str | None = None
    tls_ca: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None

    def __repr__(self) -> str:
        return f"NatsAuth(url={self.url!r}, auth={'yes' if self._has_secret() else 'no'})"

    def _has_secret(self) -> bool:
        return any((self.creds, self.user, self.token, self.nkey_seed))

    def connect_kwargs(self) -> dict[str, Any]:
        kw: dict[str, Any] = {}
        if self.creds:
            kw["user_credentials"] = self.creds
        if self.user:
            kw["user"], kw["password"] = self.user, self.password or ""
        if self.token:
            kw["token"] = self.token
        if self.nkey_seed:
            kw["nkeys_seed"] = self.nkey_seed
        if self.tls_ca or self.tls_cert:
            ctx = ssl.create_default_context(cafile=self.tls_ca)
            if self.tls_cert:
                ctx.load_cert_chain(self.tls_cert, self.tls_key)
            kw["tls"] = ctx
        return kw


async def connect(auth: NatsAuth, name: str, connect_timeout: float = 5.0) -> NATS:
    """Connect, failing fast with NatsUnavailable; afterwards reconnect forever."""

    async def on_disconnect() -> None:
        log.warning("nats_disconnected", service=name)

    async def on_reconnect() -> None:
        log.info("nats_reconnected", service=name)

    async def on_error(e: Exception) -> None:
        log.warning("nats_error", service=name, error=str(e))

    try:
        return await nats.connect(
            servers=[auth.url],
            name=name,
            connect_timeout=connect_timeout,
            allow_reconnect=True,
            max_reconnect_attempts=-1,
            reconnect_time_wait=0.5,
            ping_interval=5,
            max_outstanding_pings=3,
            disconnected_cb=on_disconnect,
            reconnected_cb=on_reconnect,
            error_cb=on_error,
            pending_size=64 * 1024 * 1024,
            **auth.connect_kwargs(),
        )
    except Exception as e:  # NoServersError, OSError, timeouts, auth errors
        raise NatsUnavailable(f"cannot reach NATS at {auth.url}: {e or type(e).__name__}") from e
