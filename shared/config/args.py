"""Flags every service shares, defined once, and the typed config built from them.

    p = argparse.ArgumentParser()
    add_common_args(p)
    ns = p.parse_args(expand_config_argv(argv))
    common = common_from_args(ns)

Secrets (NATS password, token, creds and seed files) may come from the
environment instead of the command line, where `ps` would show them.
"""

from __future__ import annotations

import argparse
import os

import msgspec

LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
DRAIN_GRACE_S = 30.0  # --drain-grace: seconds to finish requests in flight on SIGTERM
_TRUTHY = ("1", "true", "yes", "on")


class NatsOptions(msgspec.Struct, frozen=True):
    """How to reach NATS. `repr` never shows a secret.

    `url` is one URL or several, comma-separated (the nodes of a cluster; the client
    reconnects to any live one). `replicas`: of the JetStream buckets and streams this
    process creates or finds with fewer; 0 picks 3 on a cluster of 3 or more nodes, else 1.
    """

    url: str = "nats://127.0.0.1:4222"
    replicas: int = 0
    creds: str | None = None
    user: str | None = None
    password: str | None = None
    token: str | None = None
    nkey_seed: str | None = None
    tls_ca: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None

    @property
    def urls(self) -> list[str]:
        return [u.strip() for u in self.url.split(",") if u.strip()]

    @property
    def has_auth(self) -> bool:
        return any((self.creds, self.user, self.password, self.token, self.nkey_seed))

    @property
    def has_tls(self) -> bool:
        return any((self.tls_ca, self.tls_cert, self.tls_key))

    def __repr__(self) -> str:
        auth = "yes" if self.has_auth else "no"
        tls = "yes" if self.has_tls else "no"
        url = ",".join(_hide_userinfo(u) for u in self.urls)
        return f"NatsOptions(url={url!r}, replicas={self.replicas}, auth={auth}, tls={tls})"


class CommonConfig(msgspec.Struct, frozen=True):
    namespace: str = "shoal"
    nats: NatsOptions = NatsOptions()
    system_host: str = "127.0.0.1"
    system_port: int = 0
    log_level: str = "info"
    log_json: bool = False
    otlp_endpoint: str | None = None
    drain_grace: float = DRAIN_GRACE_S  # services that drain (add_common_args(drains=True))


def add_common_args(parser: argparse.ArgumentParser, *, drains: bool = False) -> None:
    """Add the flags every service accepts (namespace, NATS, system port, logs, traces, config file);
    `drains`: the service finishes requests in flight on SIGTERM (--drain-grace)."""
    env = os.environ.get
    g = parser.add_argument_group("common")
    g.add_argument("--namespace", default=env("SHOAL_NAMESPACE", "shoal"),
                   help="deployment namespace (env SHOAL_NAMESPACE)")
    g.add_argument("--config", metavar="FILE.yaml", help="read flags from a YAML file; command-line flags win")
    g.add_argument("--config-key", metavar="A.B", help="dotted path of the section of --config to read")
    g.add_argument("--system-host", default="127.0.0.1", help="address of the /health /ready /metrics port")
    g.add_argument("--system-port", type=int, default=env("SHOAL_SYSTEM_PORT", "0"),
                   help="system port; 0 picks a free one (env SHOAL_SYSTEM_PORT)")
    g.add_argument("--log-level", type=str.lower, choices=LOG_LEVELS, default=env("SHOAL_LOG_LEVEL", "info"))
    g.add_argument("--log-json", action="store_true", default=env("SHOAL_LOG_JSON", "").lower() in _TRUTHY,
                   help="JSON lines instead of console logs (env SHOAL_LOG_JSON)")
    g.add_argument("--otlp-endpoint", default=None,
                   help="OTLP/HTTP trace collector, e.g. http://127.0.0.1:4318 (env OTEL_EXPORTER_OTLP_ENDPOINT)")
    if drains:
        g.add_argument("--drain-grace", type=float, default=DRAIN_GRACE_S, metavar="SECONDS",
                       help="on SIGTERM: seconds to finish requests in flight before stopping")
    _add_nats_args(parser)


NATS_IDENTITY_ENV = ("NATS_CREDS", "NATS_USER", "NATS_PASSWORD", "NATS_TOKEN", "NATS_NKEY_SEED")  # who connects
WORKER_ENV_PREFIX = "SHOAL_WORKER_"  # SHOAL_WORKER_NATS_PASSWORD: the identity of the workers a planner starts


def _add_nats_args(parser: argparse.ArgumentParser) -> None:
    env = os.environ.get
    g = parser.add_argument_group("nats")
    g.add_argument("--nats-url", default=env("NATS_URL", "nats://127.0.0.1:4222"),
                   help="one URL, or a cluster's nodes comma-separated: nats://a:4222,nats://b:4222 (env NATS_URL)")
    g.add_argument("--nats-replicas", type=int, default=int(env("SHOAL_NATS_REPLICAS", "0")), metavar="N",
                   help="replicas of the JetStream buckets and streams (created, or upgraded if fewer); "
                        "0: 3 on a cluster of 3+ nodes, else 1 (env SHOAL_NATS_REPLICAS)")
    g.add_argument("--nats-creds", default=env("NATS_CREDS"), metavar="FILE", help="credentials file (env NATS_CREDS)")
    g.add_argument("--nats-user", default=env("NATS_USER"), help="env NATS_USER")
    g.add_argument("--nats-password", default=env("NATS_PASSWORD"), help="prefer env NATS_PASSWORD")
    g.add_argument("--nats-token", default=env("NATS_TOKEN"), help="prefer env NATS_TOKEN")
    g.add_argument("--nats-nkey-seed", default=env("NATS_NKEY_SEED"), metavar="FILE",
                   help="nkey seed file (env NATS_NKEY_SEED)")
    g.add_argument("--nats-tls-ca", default=env("NATS_TLS_CA"), metavar="FILE")
    g.add_argument("--nats-tls-cert", default=env("NATS_TLS_CERT"), metavar="FILE")
    g.add_argument("--nats-tls-key", default=env("NATS_TLS_KEY"), metavar="FILE")


def nats_from_args(ns: argparse.Namespace) -> NatsOptions:
    return NatsOptions(
        url=ns.nats_url, replicas=ns.nats_replicas, creds=ns.nats_creds, user=ns.nats_user, password=ns.nats_password,
        token=ns.nats_token, nkey_seed=ns.nats_nkey_seed,
        tls_ca=ns.nats_tls_ca, tls_cert=ns.nats_tls_cert, tls_key=ns.nats_tls_key,
    )


def common_from_args(ns: argparse.Namespace) -> CommonConfig:
    """The typed config of a parsed namespace. Fails if --config was parsed but never expanded."""
    if getattr(ns, "config", None):
        raise ValueError("--config was not expanded: parse expand_config_argv(argv), not argv")
    return CommonConfig(
        namespace=ns.namespace, nats=nats_from_args(ns), system_host=ns.system_host,
        system_port=ns.system_port, log_level=ns.log_level, log_json=ns.log_json,
        otlp_endpoint=ns.otlp_endpoint or None, drain_grace=getattr(ns, "drain_grace", DRAIN_GRACE_S),
    )


def _hide_userinfo(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest.split("/", 1)[0]:
        return url
    userinfo, _, host = rest.partition("@")
    user = userinfo.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}" if ":" in userinfo else f"{scheme}://***@{host}"
