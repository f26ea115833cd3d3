"""The frontend's flags."""

from __future__ import annotations

import argparse
import os

import msgspec

from shared.config.args import CommonConfig, add_common_args, common_from_args
from shared.config.flags import FlagGroup, flag
from shared.config.yaml_config import expand_or_exit
from shared.parsers.flags import add_parser_args
from shared.routing.options import ROUTER_FLAGS, RouterOptions


class ColdStartOptions(msgspec.Struct, frozen=True):
    wait_s: float = 30.0


COLD_START_FLAGS = FlagGroup(
    "scale from zero", ColdStartOptions,
    flag("wait_s", "--cold-start-wait", metavar="S",
         help="a request for a parked model (no worker live; the planner can start one) waits up to S seconds "
              "for the worker, then gets 503 with Retry-After = the start time still expected (0: at once)"),
)


class FrontendConfig(msgspec.Struct, frozen=True):
    common: CommonConfig
    http_host: str = "127.0.0.1"
    http_port: int = 8000
    router: RouterOptions = RouterOptions()
    migration_limit: int = 0
    request_timeout: float | None = None
    max_inflight: int = 4096
    max_body_bytes: int = 16 * 2**20
    max_prompt_tokens: int | None = None
    api_key: str | None = None
    custom_jinja_template: str | None = None
    drain_grace: float = 30.0
    worker_silence_timeout: float = 5.0
    ignore_unknown_fields: bool = False
    cors_allowed_origins: tuple[str, ...] = ()
    cors_allowed_methods: tuple[str, ...] = ("GET", "HEAD", "POST", "OPTIONS")
    cors_allowed_headers: tuple[str, ...] = ("authorization", "content-type")
    header_timeout: float = 10.0
    max_connections: int | None = None
    tool_call_parser: str | None = None  # override what the model cards say
    reasoning_parser: str | None = None
    cold_start: ColdStartOptions = ColdStartOptions()  # scale from zero (cold_start.py)

    def __repr__(self) -> str:  # never print the API key
        return f"FrontendConfig(http={self.http_host}:{self.http_port}, router={self.router.mode})"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m services.frontend",
                                description="shoal frontend: OpenAI-compatible HTTP over NATS workers.")
    add_common_args(p)
    g = p.add_argument_group("frontend")
    g.add_argument("--http-host", default="127.0.0.1")
    g.add_argument("--http-port", type=int, default=8000)
    g.add_argument("--migration-limit", type=int, default=0,
                   help="times a request may move to another worker when its worker is lost (0: never)")
    g.add_argument("--request-timeout", type=float, default=None, help="seconds per request (default: none)")
    g.add_argument("--max-inflight", type=int, default=4096, help="requests in flight before answering 429")
    g.add_argument("--max-body-bytes", type=int, default=16 * 2**20)
    g.add_argument("--max-prompt-tokens", type=int, default=None)
    g.add_argument("--api-key", default=os.environ.get("SHOAL_API_KEY"),
                   help="require 'Authorization: Bearer KEY' (env SHOAL_API_KEY)")
    g.add_argument("--cors-allowed-origins", type=_csv, default=(),
                   help="comma-separated origins browsers may call from ('*': any); default: no CORS")
    g.add_argument("--cors-allowed-methods", type=_csv, default=("GET", "HEAD", "POST", "OPTIONS"))
    g.add_argument("--cors-allowed-headers", type=_csv, default=("authorization", "content-type"),
                   help="request headers a page may send ('*': any)")
    g.add_argument("--header-timeout", type=float, default=10.0,
                   help="seconds a client has to send a whole request head before the connection is closed")
    g.add_argument("--max-connections", type=int, default=None,
                   help="open client connections before new ones are answered 503 (default: no limit)")
    g.add_argument("--ignore-unknown-fields", action="store_true",
                   help="drop request fields the OpenAI API does not define (default: answer 400 naming them)")
    g.add_argument("--custom-jinja-template", default=None, help="chat template file overriding the model's")
    g.add_argument("--drain-grace", type=float, default=30.0)
    g.add_argument("--worker-silence-timeout", type=float, default=5.0,
                   help="seconds without a frame (workers send keep-alives every second) before a worker is lost")
    add_parser_args(g, where="overrides what the workers publish in their model cards")
    ROUTER_FLAGS.add_to(p)
    COLD_START_FLAGS.add_to(p)
    return p


def parse(argv: list[str]) -> FrontendConfig:
    p = parser()
    ns = p.parse_args(expand_or_exit(p, argv))
    template = None
    if ns.custom_jinja_template:
        try:
            with open(ns.custom_jinja_template, encoding="utf-8") as f:
                template = f.read()
        except OSError as e:
            p.error(f"--custom-jinja-template: {e}")
    return FrontendConfig(
        common=common_from_args(ns), http_host=ns.http_host, http_port=ns.http_port, router=ROUTER_FLAGS.build(ns),
        migration_limit=ns.migration_limit, request_timeout=ns.request_timeout, max_inflight=ns.max_inflight,
        max_body_bytes=ns.max_body_bytes, max_prompt_tokens=ns.max_prompt_tokens, api_key=ns.api_key,
        custom_jinja_template=template, drain_grace=ns.drain_grace,
        worker_silence_timeout=ns.worker_silence_timeout,
        ignore_unknown_fields=ns.ignore_unknown_fields, cors_allowed_origins=ns.cors_allowed_origins,
        cors_allowed_methods=ns.cors_allowed_methods, cors_allowed_headers=ns.cors_allowed_headers,
        header_timeout=ns.header_timeout, max_connections=ns.max_connections,
        tool_call_parser=ns.tool_call_parser, reasoning_parser=ns.reasoning_parser,
        cold_start=COLD_START_FLAGS.build(ns),
    )


def _csv(value: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in value.split(",") if v.strip())

