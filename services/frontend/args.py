"""The frontend's flags: each knob a field of FrontendConfig with its flag beside it (shared.config.flags)."""

from __future__ import annotations

import argparse
import os

import msgspec

from services.frontend.dispatch import DEFAULT_MAX_INFLIGHT
from services.frontend.lora_flags import LoraAdminOptions, add_lora_admin_args, lora_admin_options
from services.frontend.options import DEFAULT_MAX_RERANK_DOCUMENTS
from shared.config.args import CommonConfig, add_common_args, common_from_args
from shared.config.flags import FlagGroup, flag
from shared.config.yaml_config import expand_or_exit
from shared.parsers.flags import add_parser_args
from shared.routing.options import ROUTER_FLAGS, RouterOptions


def _csv(value: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in value.split(",") if v.strip())


class ColdStartOptions(msgspec.Struct, frozen=True):
    wait_s: float = 30.0


COLD_START_FLAGS = FlagGroup(
    "scale from zero", ColdStartOptions,
    flag("wait_s", "--cold-start-wait", metavar="S",
         help="a request for a parked model (no worker live; the planner can start one) waits up to S seconds "
              "for the worker, then gets 503 with Retry-After = the start time still expected (0: at once)"),
)


class FrontendConfig(msgspec.Struct, frozen=True):
    common: CommonConfig = CommonConfig()
    http_host: str = "127.0.0.1"
    http_port: int = 8000
    router: RouterOptions = RouterOptions()
    migration_limit: int = 0
    request_timeout: float | None = None
    max_inflight: int = DEFAULT_MAX_INFLIGHT
    max_body_bytes: int = 16 * 2**20
    max_prompt_tokens: int | None = None
    api_key: str | None = None
    api_key_file: str | None = None  # where api_key was read from (the flag names the file)
    custom_jinja_template: str | None = None  # the template's text (the flag names its file)
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
    lora_admin: LoraAdminOptions = LoraAdminOptions()
    max_rerank_documents: int = DEFAULT_MAX_RERANK_DOCUMENTS
    cold_start: ColdStartOptions = ColdStartOptions()  # scale from zero (cold_start.py)

    def __repr__(self) -> str:  # never print the API key
        return f"FrontendConfig(http={self.http_host}:{self.http_port}, router={self.router.mode})"


FRONTEND_FLAGS = FlagGroup(
    "frontend", FrontendConfig,
    flag("http_host", "--http-host"),
    flag("http_port", "--http-port"),
    flag("migration_limit", "--migration-limit",
         help="times a request may move to another worker when its worker is lost (0: never)"),
    flag("request_timeout", "--request-timeout", help="seconds per request (default: none)"),
    flag("max_inflight", "--max-inflight", help="requests in flight before answering 429"),
    flag("max_body_bytes", "--max-body-bytes"),
    flag("max_prompt_tokens", "--max-prompt-tokens"),
    flag("max_rerank_documents", "--max-rerank-documents",
         help="documents (or score pairs) one /v1/rerank or /v1/score request may hold; more: 400"),
    flag("api_key", "--api-key", help="require 'Authorization: Bearer KEY' or 'x-api-key: KEY' (env SHOAL_API_KEY; "
                                      "prefer it or --api-key-file: a flag shows in ps)"),
    flag("api_key_file", "--api-key-file",
         help="read the API key from this file (env SHOAL_API_KEY_FILE; e.g. a mounted Secret)"),
    flag("protect_metrics", "--protect-metrics",
         help="require the API key on /metrics, /health and /openapi.json too (default: open; "
              "/live stays open for probes)"),
    flag("allowed_hosts", "--allowed-hosts", type=_csv,
         help="comma-separated Host header names accepted (DNS rebinding); default: any"),
    flag("allow_client_priority", "--allow-client-priority",
         help="honour a request's priority field (default: ignored; any client could jump the queue)"),
    flag("max_prompt_bytes", "--max-prompt-bytes",
         help="UTF-8 bytes of prompt text, checked before tokenizing (default: 32 x --max-prompt-tokens, "
              "or 32 x the model's context length)"),
    flag("max_grammar_bytes", "--max-grammar-bytes",
         help="bytes of response_format / regex / ebnf / choice / forced tools a request may send"),
    flag("max_json_depth", "--max-json-depth", help="nesting depth of a request body's JSON"),
    flag("grammar_compile_timeout", "--grammar-compile-timeout",
         help="seconds a request waits for its grammar to compile (in the grammar pool) before a 400"),
    flag("cors_allowed_origins", "--cors-allowed-origins", type=_csv,
         help="comma-separated origins browsers may call from ('*': any); default: no CORS"),
    flag("cors_allowed_methods", "--cors-allowed-methods", type=_csv),
    flag("cors_allowed_headers", "--cors-allowed-headers", type=_csv,
         help="request headers a page may send ('*': any)"),
    flag("header_timeout", "--header-timeout",
         help="seconds a client has to send a whole request head before the connection is closed"),
    flag("body_timeout", "--body-timeout",
         help="seconds a client has to send a whole request body once its head is in"),
    flag("max_connections", "--max-connections",
         help="open client connections before new ones are answered 503 (0: no limit)"),
    flag("ignore_unknown_fields", "--ignore-unknown-fields",
         help="drop request fields the OpenAI API does not define (default: answer 400 naming them)"),
    flag("custom_jinja_template", "--custom-jinja-template", help="chat template file overriding the model's"),
    flag("worker_silence_timeout", "--worker-silence-timeout",
         help="seconds without a frame (workers send keep-alives every second) before a worker is lost"),
)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m services.frontend",
                                description="shoal frontend: OpenAI- and Anthropic-compatible HTTP over NATS workers.")
    add_common_args(p, drains=True)
    FRONTEND_FLAGS.add_to(p, defaults={"api_key": os.environ.get("SHOAL_API_KEY"),
                                       "api_key_file": os.environ.get("SHOAL_API_KEY_FILE")})
    add_parser_args(p.add_argument_group("output parsers"), where="overrides what the workers publish in their "
                                                                    "model cards")
    ROUTER_FLAGS.add_to(p)
    add_lora_admin_args(p)
    COLD_START_FLAGS.add_to(p)
    return p


def parse(argv: list[str]) -> FrontendConfig:
    p = parser()
    ns = p.parse_args(expand_or_exit(p, argv))
    if getattr(ns, FRONTEND_FLAGS.dest("max_rerank_documents")) < 1:
        p.error("--max-rerank-documents must be at least 1")
    template = None
    path = getattr(ns, FRONTEND_FLAGS.dest("custom_jinja_template"))
    if path:
        try:
            with open(path, encoding="utf-8") as f:
                template = f.read()
        except OSError as e:
            p.error(f"--custom-jinja-template: {e}")
    api_key = getattr(ns, FRONTEND_FLAGS.dest("api_key")) or None  # an empty SHOAL_API_KEY (compose's default): no key
    key_file = getattr(ns, FRONTEND_FLAGS.dest("api_key_file"))
    if key_file:
        try:
            with open(key_file, encoding="utf-8") as f:
                api_key = f.read().strip() or None
        except OSError as e:
            p.error(f"--api-key-file: {e}")
    return FRONTEND_FLAGS.build(ns, common=common_from_args(ns), router=ROUTER_FLAGS.build(ns),
                                custom_jinja_template=template, api_key=api_key,
                                max_connections=getattr(ns, FRONTEND_FLAGS.dest("max_connections")) or None,
                                tool_call_parser=ns.tool_call_parser, reasoning_parser=ns.reasoning_parser,
                                lora_admin=lora_admin_options(p, ns, api_key),
                                cold_start=COLD_START_FLAGS.build(ns))
