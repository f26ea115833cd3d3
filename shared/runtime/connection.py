"""The NATS connection: reconnects with back-off; a clear error when NATS is down."""

from __future__ import annotations

import asyncio
import ssl
from typing import Any

import nats
from nats.aio.client import Client as NATS

from shared.config.args import NatsOptions
from shared.runtime.errors import NatsUnavailable
from shared.telemetry.logging import get_logger

log = get_logger("shoal.runtime")


def connect_kwargs(opts: NatsOptions) -> dict[str, Any]:
    kw: dict[str, Any] = {}
    if opts.creds:
        kw["user_credentials"] = opts.creds
    if opts.user:
        kw["user"], kw["password"] = opts.user, opts.password or ""
    if opts.token:
        kw["token"] = opts.token
    if opts.nkey_seed:
        kw["nkeys_seed"] = opts.nkey_seed
    if opts.tls_ca or opts.tls_cert:
        ctx = ssl.create_default_context(cafile=opts.tls_ca)
        if opts.tls_cert:
            ctx.load_cert_chain(opts.tls_cert, opts.tls_key)
        kw["tls"] = ctx
    return kw


async def connect(auth: NatsOptions, name: str, connect_timeout: float = 5.0) -> NATS:
    """Connect, failing fast with NatsUnavailable; afterwards reconnect forever."""

    async def on_disconnect() -> None:
        log.warning("nats_disconnected", service=name)

    async def on_reconnect() -> None:
        log.info("nats_reconnected", service=name)

    async def on_error(e: Exception) -> None:
        log.warning("nats_error", service=name, error=str(e))

    try:
        return await asyncio.wait_for(nats.connect(
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
            skip_subject_validation=True,  # subjects come from protocol.subjects, checked there
            **connect_kwargs(auth),
        ), connect_timeout)
    except Exception as e:  # NoServersError, OSError, timeouts, auth errors
        raise NatsUnavailable(f"cannot reach NATS at {auth.url}: {str(e) or type(e).__name__}") from e
