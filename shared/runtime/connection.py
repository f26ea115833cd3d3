"""The NATS connection: reconnects with back-off; a clear error when NATS is down.

Given several URLs (a cluster), the client connects to one of them and, when that node goes,
reconnects to any live one: those it was given and those the cluster advertises. Core
subscriptions are renewed by nats-py; what the services keep in JetStream survives in the
replicas (shared.runtime.replicas).
"""

from __future__ import annotations

import asyncio
import ssl
from typing import Any

import nats
from nats.aio.client import Client as NATS

from protocol import subjects
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


def _refused(e: Exception) -> bool:
    text = f"{type(e).__name__} {e}".lower()
    return "authorization" in text or "authentication" in text


async def connect(auth: NatsOptions, name: str, connect_timeout: float = 5.0) -> NATS:
    """Connect, failing fast with NatsUnavailable; afterwards reconnect forever.

    Refused credentials end the first attempt at once (nats-py would otherwise retry them
    until the timeout and report only that).
    """
    refused: asyncio.Future[Exception] = asyncio.get_running_loop().create_future()
    conn: list[NATS] = []
    node = {"server": ""}  # the node last connected to (host:port, no credentials)

    def server() -> str:
        url = conn[0].connected_url if conn else None
        if url:
            node["server"] = url.netloc.rpartition("@")[2]
        return node["server"]

    async def on_disconnect() -> None:
        log.warning("nats_disconnected", service=name, server=node["server"])

    async def on_reconnect() -> None:
        log.info("nats_reconnected", service=name, server=server())

    async def on_error(e: Exception) -> None:
        if _refused(e) and not refused.done():
            refused.set_result(e)
        log.warning("nats_error", service=name, error=str(e) or type(e).__name__)

    attempt = asyncio.ensure_future(nats.connect(
        servers=auth.urls,
        name=name,
        connect_timeout=connect_timeout,
        allow_reconnect=True,
        max_reconnect_attempts=-1,
        reconnect_time_wait=0.5,  # before trying the same node again; the next node is tried at once
        ping_interval=5,
        max_outstanding_pings=3,
        disconnected_cb=on_disconnect,
        reconnected_cb=on_reconnect,
        error_cb=on_error,
        pending_size=64 * 1024 * 1024,
        inbox_prefix=subjects.service_inbox(name),
        skip_subject_validation=True,  # subjects come from protocol.subjects, checked there
        **connect_kwargs(auth),
    ))
    try:
        done, _ = await asyncio.wait({attempt, refused}, timeout=connect_timeout,
                                     return_when=asyncio.FIRST_COMPLETED)
        if attempt in done:
            conn.append(attempt.result())
            server()
            return conn[0]
        if refused in done:
            raise NatsUnavailable(f"NATS at {auth.url} refused this service's credentials "
                                  f"(authorization violation): check --nats-user/--nats-creds")
        raise TimeoutError(f"no answer within {connect_timeout:g}s")
    except NatsUnavailable:
        raise
    except Exception as e:  # NoServersError, OSError, timeouts
        raise NatsUnavailable(f"cannot reach NATS at {auth.url}: {str(e) or type(e).__name__}") from e
    finally:
        if not attempt.done():
            attempt.cancel()
            await asyncio.gather(attempt, return_exceptions=True)
