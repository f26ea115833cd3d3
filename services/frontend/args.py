"""The frontend's flags."""

from __future__ import annotations

import argparse
import os

import msgspec

from shared.config.args import CommonConfig, add_common_args, common_from_args
from shared.config.yaml_config import expand_or_exit
from shared.parsers.flags import add_parser_args
from shared.routing.options import ROUTER_FLAGS, RouterOptions


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
    body_timeout: float = 60.0
    max_connections: int | None = 4096
    max_prompt_bytes: int | None = None
    max_grammar_bytes: int = 64 * 1024
    max_json_depth: int = 64
    allow_client_priority: bool = False
    allowed_hosts: tuple[str, ...] = ()
    protect_metrics: bool = False
    grammar_compile_timeout: float = 10.0
    tool_call_parser: str | None = None  # override what the model cards say
    reasoning_parser: str | None = None

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
                   help="require 'Authorization: Bearer KEY' (env SHOAL_API_KEY; prefer it or --api-key-file: "
                        "a flag shows in ps)")
    g.add_argument("--api-key-file", default=os.environ.get("SHOAL_API_KEY_FILE"),
                   help="read the API key from this file (env SHOAL_API_KEY_FILE; e.g. a mounted Secret)")
    g.add_argument("--protect-metrics", action="store_true",
                   help="require the API key on /metrics, /health and /openapi.json too (default: open; "
                        "/live stays open for probes)")
    g.add_argument("--allowed-hosts", type=_csv, default=(),
                   help="comma-separated Host header names accepted (DNS rebinding); default: any")
    g.add_argument("--allow-client-priority", action="store_true",
                   help="honour a request's priority field (default: ignored; any client could jump the queue)")
    g.add_argument("--max-prompt-bytes", type=int, default=None,
                   help="UTF-8 bytes of prompt text, checked before tokenizing (default: 32 x --max-prompt-tokens, "
                        "or 32 x the model's context length)")
    g.add_argument("--max-grammar-bytes", type=int, default=64 * 1024,
                   help="bytes of response_format / regex / ebnf / choice / forced tools a request may send")
    g.add_argument("--max-json-depth", type=int, default=64, help="nesting depth of a request body's JSON")
    g.add_argument("--grammar-compile-timeout", type=float, default=10.0,
                   help="seconds a request waits for its grammar to compile (in the grammar pool) before a 400")
    g.add_argument("--cors-allowed-origins", type=_csv, default=(),
                   help="comma-separated origins browsers may call from ('*': any); default: no CORS")
    g.add_argument("--cors-allowed-methods", type=_csv, default=("GET", "HEAD", "POST", "OPTIONS"))
    g.add_argument("--cors-allowed-headers", type=_csv, default=("authorization", "content-type"),
                   help="request headers a page may send ('*': any)")
    g.add_argument("--header-timeout", type=float, default=10.0,
                   help="seconds a client has to send a whole request head before the connection is closed")
    g.add_argument("--body-timeout", type=float, default=60.0,
                   help="seconds a client has to send a whole request body once its head is in")
    g.add_argument("--max-connections", type=int, default=4096,
                   help="open client connections before new ones are answered 503 (0: no limit)")
    g.add_argument("--ignore-unknown-fields", action="store_true",
                   help="drop request fields the OpenAI API does not define (default: answer 400 naming them)")
    g.add_argument("--custom-jinja-template", default=None, help="chat template file overriding the model's")
    g.add_argument("--drain-grace", type=float, default=30.0)
    g.add_argument("--worker-silence-timeout", type=float, default=5.0,
                   help="seconds without a frame (workers send keep-alives every second) before a worker is lost")
    add_parser_args(g, where="overrides what the workers publish in their model cards")
    ROUTER_FLAGS.add_to(p)
    return p


def parse(argv: list[str]) -> FrontendConfig:
    p = parser()
    ns = p.parse_args(expand_or_exit(p, argv))
    template = None
    api_key = ns.api_key or None  # an empty SHOAL_API_KEY (compose's default) means no key
    if ns.api_key_file:
        try:
            with open(ns.api_key_file, encoding="utf-8") as f:
                api_key = f.read().strip() or None
        except OSError as e:
            p.error(f"--api-key-file: {e}")
    if ns.custom_jinja_template:
        try:
            with open(ns.custom_jinja_template, encoding="utf-8") as f:
                template = f.read()
        except OSError as e:
            p.error(f"--custom-jinja-template: {e}")
    return FrontendConfig(
        common=common_from_args(ns), http_host=ns.http_host, http_port=ns.http_port, router=ROUTER_FLAGS.build(ns),
        migration_limit=ns.migration_limit, request_timeout=ns.request_timeout, max_inflight=ns.max_inflight,
        max_body_bytes=ns.max_body_bytes, max_prompt_tokens=ns.max_prompt_tokens, api_key=api_key,
        custom_jinja_template=template, drain_grace=ns.drain_grace,
        worker_silence_timeout=ns.worker_silence_timeout,
        ignore_unknown_fields=ns.ignore_unknown_fields, cors_allowed_origins=ns.cors_allowed_origins,
        cors_allowed_methods=ns.cors_allowed_methods, cors_allowed_headers=ns.cors_allowed_headers,
        header_timeout=ns.header_timeout, max_connections=ns.max_connections or None, body_timeout=ns.body_timeout,
        max_prompt_bytes=ns.max_prompt_bytes, max_grammar_bytes=ns.max_grammar_bytes,
        max_json_depth=ns.max_json_depth, allow_client_priority=ns.allow_client_priority,
        allowed_hosts=ns.allowed_hosts, protect_metrics=ns.protect_metrics,
        grammar_compile_timeout=ns.grammar_compile_timeout,
        tool_call_parser=ns.tool_call_parser, reasoning_parser=ns.reasoning_parser,
    )


def _csv(value: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in value.split(",") if v.strip())

