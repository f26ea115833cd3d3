"""The runtime every service is built from: NATS, discovery, serve/client."""

from shared.runtime.client import EndpointClient
from shared.runtime.connection import connect
from shared.runtime.discovery import Discovery, KeyUpdate, Lease
from shared.runtime.errors import NatsUnavailable, NoInstances, RemoteError, RuntimeFailure, WorkerLost
from shared.runtime.runtime import Runtime, new_instance_id
from shared.runtime.server import EndpointServer, RequestContext

__all__ = [
    "Discovery",
    "EndpointClient",
    "EndpointServer",
    "KeyUpdate",
    "Lease",
    "NatsUnavailable",
    "NoInstances",
    "RemoteError",
    "RequestContext",
    "Runtime",
    "RuntimeFailure",
    "WorkerLost",
    "connect",
    "new_instance_id",
]
