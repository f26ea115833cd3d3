"""Every subject, bucket and stream name, defined once.

Naming ladder: namespace -> component -> endpoint -> instance.
"""

from __future__ import annotations

import re

PREFIX = "shoal"
INSTANCES_BUCKET = "shoal-instances"
MODELS_BUCKET = "shoal-models"
ARTIFACTS_STORE = "shoal-artifacts"

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
    """One instance (the router's choice)."""
    return f"{PREFIX}.{ns}.{component}.{endpoint}.{instance_id}"


def control_subject(ns: str, component: str, instance_id: str) -> str:
    """Cancel messages for the requests an instance holds."""
    return f"{PREFIX}.{ns}.{component}._control.{instance_id}"


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


def instance_key(ns: str, component: str, endpoint: str, instance_id: str) -> str:
    return f"{ns}.{component}.{endpoint}.{instance_id}"


def instance_key_filter(ns: str, component: str = "*", endpoint: str = "*") -> str:
    return f"{ns}.{component}.{endpoint}.*"


def model_key(ns: str, component: str, instance_id: str) -> str:
    return f"{ns}.{component}.{instance_id}"


def model_key_filter(ns: str) -> str:
    return f"{ns}.>"


def inbox_prefix(client_id: str) -> str:
    return f"_INBOX.shoal.{client_id}"
