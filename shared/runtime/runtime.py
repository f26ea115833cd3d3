"""One process's handle on the cluster: NATS connection, discovery, identity."""

from __future__ import annotations

import contextlib
import os
import secrets
import socket

from nats.aio.client import Client as NATS

from protocol import subjects
from shared.config.args import NatsOptions
from shared.runtime.connection import connect
from shared.runtime.discovery import CLUSTER_LEASE_TTL, DEFAULT_LEASE_TTL, Discovery
from shared.runtime.heartbeat import HeartbeatSender
from shared.runtime.replicas import replicas_for


def new_instance_id() -> str:
    """16 hex digits, unique per process start."""
    return secrets.token_hex(8)


class Runtime:
    def __init__(self, nc: NATS, namespace: str, lease_ttl: float | None = None,
                 name: str = "shoal", replicas: int = 0, heartbeats: HeartbeatSender | None = None) -> None:
        """`heartbeats`: one sender shared by runtimes on one connection (services.worker.fleet)."""
        self.nc = nc
        self.name = name  # the service name: reply inboxes are _INBOX.<name>.…
        self.namespace = subjects.check_token(namespace, "namespace")
        self.instance_id = new_instance_id()
        self.host = socket.gethostname()
        self.pid = os.getpid()
        self.replicas = replicas_for(nc, replicas)  # of every bucket and stream this process creates
        # None: a lease outlives a leader election where the buckets are replicated
        ttl = lease_ttl or (CLUSTER_LEASE_TTL if self.replicas > 1 else DEFAULT_LEASE_TTL)
        self.discovery = Discovery(nc, ttl, self.replicas, self.namespace, heartbeats)

    @classmethod
    async def connect(cls, auth: NatsOptions, namespace: str, name: str,
                      lease_ttl: float | None = None) -> Runtime:
        return cls(await connect(auth, name), namespace, lease_ttl, name, auth.replicas)

    @property
    def js(self):
        return self.discovery.js

    async def close(self) -> None:
        """Drain (deliver what is pending, then close); with NATS already gone just close, quietly."""
        if self.nc.is_closed:
            return
        try:
            if not self.nc.is_connected:
                raise ConnectionError("not connected")
            await self.nc.drain()
        except Exception:
            with contextlib.suppress(Exception):
                await self.nc.close()
