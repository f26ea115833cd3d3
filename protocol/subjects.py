"""Every subject, bucket and stream name, defined once.

Naming ladder: namespace -> component -> endpoint -> instance.
"""

from __future__ import annotations

import hashlib
import re

PREFIX = "shoal"
INSTANCES_BUCKET = "shoal-instances"
MODELS_BUCKET = "shoal-models"
ARTIFACTS_STORE = "shoal-artifacts"
NIXL_BUCKET = "shoal-nixl"  # NIXL agent records of decode workers (protocol.transfer.AgentRecord)
SESSIONS_BUCKET = "shoal-sessions"  # session -> worker (protocol.sessions.SessionRecord), per-key TTL

_TOKEN = re.compile(r"^[A-Za-z0-9_-]+$")


def check_token(value: str, what: str) -> str:
    """A subject token: letters, digits, '_' and '-' only (no dots or wildcards)."""
    if not _TOKEN.match(value):
        raise ValueError(f"{what} {value!r} must match [A-Za-z0-9_-]+")
    return value


def endpoint_subject(ns: str, component: str, endpoint: str) -> str:
    """Any instance (queue group)."""
    return f"{PREFIX}.{ns}.{component}.{endpoint}"


def instance_subject(ns: str, component: str, endpoint: str, instance_id: str) -> str:
    """One instance (the router's choice); the id is checked (it may come from a client: router mode direct)."""
    return f"{PREFIX}.{ns}.{component}.{endpoint}.{check_token(instance_id, 'instance id')}"


def control_subject(ns: str, component: str, instance_id: str) -> str:
    """Cancel messages for the requests an instance holds."""
    return f"{PREFIX}.{ns}.{component}._control.{check_token(instance_id, 'instance id')}"


def kv_events_subject(ns: str, component: str, instance_id: str) -> str:
    return f"{PREFIX}.{ns}.kv.{component}.{instance_id}"


def kv_events_stream(ns: str) -> str:
    return f"shoal-kv-{ns}"


def kv_events_filter(ns: str, component: str = "*") -> str:
    return f"{PREFIX}.{ns}.kv.{component}.*"


def kv_events_all(ns: str) -> str:
    """Every component's KV events: the stream's subject."""
    return f"{PREFIX}.{ns}.kv.>"


def load_subject(ns: str, component: str, instance_id: str) -> str:
    return f"{PREFIX}.{ns}.load.{component}.{instance_id}"


def load_filter(ns: str, component: str = "*") -> str:
    return f"{PREFIX}.{ns}.load.{component}.*"


def heartbeat_subject(ns: str) -> str:
    """Lease heartbeats of a namespace's processes (protocol.discovery.Heartbeat)."""
    return f"{PREFIX}.{ns}.hb"


def instance_key(ns: str, component: str, endpoint: str, instance_id: str) -> str:
    return f"{ns}.{component}.{endpoint}.{instance_id}"


def instance_key_filter(ns: str, component: str = "*", endpoint: str = "*") -> str:
    return f"{ns}.{component}.{endpoint}.*"


def model_key(ns: str, component: str, instance_id: str) -> str:
    return f"{ns}.{component}.{instance_id}"


def model_key_filter(ns: str) -> str:
    return f"{ns}.>"


def service_inbox(service: str) -> str:
    """Every reply subject of one service's connection starts with this (nats-py `inbox_prefix`),
    so a NATS user per service can be allowed only its own inboxes."""
    return f"_INBOX.{check_token(service, 'service name')}"


def inbox_prefix(service: str, client_id: str) -> str:
    """An EndpointClient's stream inboxes: `<prefix>.<request id>`."""
    return f"{service_inbox(service)}.shoal-{client_id}"


def agent_key(ns: str, instance_id: str) -> str:
    """Key of an instance's NIXL agent record in NIXL_BUCKET."""
    return f"{ns}.{instance_id}"


def frontend_stats_subject(ns: str, instance_id: str) -> str:
    """A frontend's per-model TTFT/ITL windows (protocol.stats.FrontendStats), core NATS, for the planner."""
    return f"{PREFIX}.{ns}.stats.frontend.{instance_id}"


def frontend_stats_filter(ns: str) -> str:
    return f"{PREFIX}.{ns}.stats.frontend.*"


def session_key(ns: str, component: str, session_id: str) -> str:
    """Key of a session's record in SESSIONS_BUCKET: a hash, so any session id makes a valid key."""
    return f"{ns}.{component}.{hashlib.blake2b(session_id.encode(), digest_size=16).hexdigest()}"


def session_key_filter(ns: str, component: str) -> str:
    return f"{ns}.{component}.*"
