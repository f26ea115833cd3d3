"""SGLang's flags, passed through unchanged: check them, add shoal's defaults, read what shoal needs.

The decode worker keeps its own few flags and hands every other one here.
With sglang importable the list is parsed by SGLang's own parser
(`ServerArgs.add_cli_args` on a fresh parser; `ServerArgs.from_cli_args` at
start), so the flags are always those of the installed version. Without it
the list is kept as given and only its shape is checked; the machine that
runs the engine parses it again.

shoal's defaults, each added only when the flag is absent:

    --page-size 16            KV events and routing work in 16-token blocks (SGLang's own default is 1)
    --kv-events-config {...}  a ZMQ publisher on a private ipc:// socket (tcp for --dp-size > 1)
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import socket
import tempfile
from dataclasses import dataclass
from typing import Any, NoReturn

from protocol.discovery import DEFAULT_PAGE_SIZE
from shared.engine.sglang.argv import SglangArgsError, conflicts, occurrences

ALIASES: dict[str, tuple[str, ...]] = {  # settings shoal reads, under every spelling SGLang accepts
    "model_path": ("--model-path", "--model"),
    "page_size": ("--page-size",),
    "kv_events_config": ("--kv-events-config",),
    "disaggregation_mode": ("--disaggregation-mode",),
    "disaggregation_bootstrap_port": ("--disaggregation-bootstrap-port",),
    "disaggregation_transfer_backend": ("--disaggregation-transfer-backend",),
    "host": ("--host",),
    "dp_size": ("--dp-size", "--data-parallel-size"),
    "tp_size": ("--tp-size", "--tensor-parallel-size"),
    "enable_metrics": ("--enable-metrics",),
    "incremental_streaming_output": ("--incremental-streaming-output", "--stream-output"),
    "skip_tokenizer_init": ("--skip-tokenizer-init",),
}
_SWITCHES = frozenset({"enable_metrics", "incremental_streaming_output", "skip_tokenizer_init"})


@dataclass(frozen=True)
class KvEventsSettings:
    """SGLang's `--kv-events-config`, as far as a subscriber needs it."""

    endpoint: str
    replay_endpoint: str | None = None
    topic: str = ""


@dataclass(frozen=True)
class SglangConfig:
    """Everything the SGLang engine adapter needs, parsed once."""

    model_path: str
    argv: tuple[str, ...]  # the complete SGLang command line, defaults included
    parsed: bool  # True: checked by SGLang's own parser
    page_size: int
    dp_size: int = 1
    disaggregation_mode: str = "null"
    transfer_backend: str = "mooncake"
    host: str = "127.0.0.1"
    bootstrap_port: int = 8998
    kv_events: KvEventsSettings | None = None
    enable_metrics: bool = False
    incremental_output: bool = False
    skip_tokenizer_init: bool = False


def build_sglang_config(sglang_argv: list[str], *, model_path: str) -> SglangConfig:
    """Check SGLang's flags (all passed through), add shoal's defaults, and read the settings shoal uses."""
    argv = list(sglang_argv)
    parser = sglang_parser()
    dest_of = _dest_lookup(parser)
    found = [(_resolve(dest_of, o.flag, exact=parser is None), o.flag, o.values) for o in occurrences(argv)]
    if parser is not None:
        unknown = sorted({flag for dest, flag, _ in found if dest == flag})
        if unknown:
            raise SglangArgsError(f"unknown SGLang flag(s) for sglang {_sglang_version()}: {', '.join(unknown)}")
    problems = conflicts(found) + _model_path_conflicts(found, model_path)
    if problems:
        raise SglangArgsError("conflicting SGLang flags: " + "; ".join(problems))
    given = {dest for dest, _, _ in found}
    argv = _with_defaults(argv, given, model_path, dest_of if parser is not None else None)
    ns = _parse(parser, argv) if parser is not None else None
    try:
        return _config(model_path, argv, ns)
    except ValueError as e:
        if isinstance(e, SglangArgsError):
            raise
        raise SglangArgsError(f"SGLang flags: {e}") from e


def sglang_parser() -> argparse.ArgumentParser | None:
    """SGLang's own argument parser, or None when sglang is not installed here."""
    try:
        from sglang.srt.server_args import ServerArgs
    except ModuleNotFoundError as e:
        if e.name is not None and e.name.split(".")[0] == "sglang":
            return None
        raise SglangArgsError(f"sglang is installed but cannot be imported: {e}") from e
    parser = _RaisingParser(prog="sglang", add_help=False)  # abbreviations allowed, as `sglang serve` does
    ServerArgs.add_cli_args(parser)
    return parser


def to_server_args(cfg: SglangConfig) -> Any:
    """SGLang's ServerArgs for `cfg` (imports sglang)."""
    from sglang.srt.server_args import ServerArgs

    parser = sglang_parser()
    assert parser is not None
    return ServerArgs.from_cli_args(_parse(parser, list(cfg.argv)))


class _RaisingParser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise SglangArgsError(f"SGLang flags: {message}")


def _sglang_version() -> str:
    try:
        from sglang.version import __version__

        return str(__version__)
    except ImportError:
        return "?"


def _dest_lookup(parser: argparse.ArgumentParser | None) -> dict[str, str]:
    if parser is None:
        return {flag: dest for dest, flags in ALIASES.items() for flag in flags}
    return {flag: action.dest for action in parser._actions for flag in action.option_strings}


def _resolve(dest_of: dict[str, str], flag: str, exact: bool) -> str:
    """The setting `flag` sets; SGLang's parser also takes unambiguous prefixes (`--tp` for `--tp-size`)."""
    if flag in dest_of or exact:
        return dest_of.get(flag, flag)
    dests = {dest for option, dest in dest_of.items() if option.startswith(flag)}
    if len(dests) > 1:
        some = sorted(dests)
        more = f" and {len(some) - 4} more" if len(some) > 4 else ""
        raise SglangArgsError(f"{flag} is ambiguous: it could be {', '.join(some[:4])}{more}")
    return dests.pop() if dests else flag


def _model_path_conflicts(found: list[tuple[str, str, tuple[str, ...]]], model_path: str) -> list[str]:
    return [f"{flag} {' '.join(values)} vs the worker's --model-path {model_path}"
            for dest, flag, values in found if dest == "model_path" and values != (model_path,)]


JSON_WHITESPACE_FLAG = "--constrained-json-disable-any-whitespace"
_JSON_WHITESPACE = ("constrained_json_disable_any_whitespace", "constrained_json_whitespace_pattern",
                    JSON_WHITESPACE_FLAG, "--constrained-json-whitespace-pattern")


def _with_defaults(argv: list[str], given: set[str], model_path: str,
                   dest_of: dict[str, str] | None = None) -> list[str]:
    out = list(argv) if "model_path" in given else ["--model-path", model_path, *argv]
    # JSON whitespace bounded as the reference engine bounds it (xgrammar any_whitespace=False): with SGLang's
    # default a random or weak model can fill a JSON object with whitespace up to max_tokens
    if not given & set(_JSON_WHITESPACE) and (dest_of is None or JSON_WHITESPACE_FLAG in dest_of):
        out.append(JSON_WHITESPACE_FLAG)
    if "page_size" not in given:
        out += ["--page-size", str(DEFAULT_PAGE_SIZE)]
    if "kv_events_config" not in given:
        out += ["--kv-events-config", json.dumps(default_kv_events(_raw_int(argv, "dp_size", 1)))]
    return out


def default_kv_events(dp_size: int) -> dict[str, Any]:
    """A ZMQ publisher for this worker: private ipc sockets, or free tcp ports (all interfaces) for DP > 1.

    SGLang binds its publisher when the endpoint is a wildcard or ipc (and
    connects otherwise); with DP it adds the rank to a tcp port, which ipc
    endpoints do not support.
    """
    topic = "kv"
    if dp_size <= 1:
        base = os.path.join(tempfile.gettempdir(), f"shoal-kv-{os.getpid()}-{secrets.token_hex(4)}")
        return {"publisher": "zmq", "endpoint": f"ipc://{base}", "replay_endpoint": f"ipc://{base}-replay",
                "topic": topic}
    pub, replay = _free_port_range(dp_size), _free_port_range(dp_size)
    return {"publisher": "zmq", "endpoint": f"tcp://*:{pub}", "replay_endpoint": f"tcp://*:{replay}",
            "topic": topic}


def _free_port_range(n: int) -> int:
    """A port p with p .. p+n-1 all free now."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("", 0))
            base = s.getsockname()[1]
        if base + n < 65536 and all(_port_free(base + i) for i in range(1, n)):
            return base
    raise SglangArgsError(f"no {n} consecutive free ports for KV events")


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("", port))
            return True
        except OSError:
            return False


def _parse(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    ns, extra = parser.parse_known_args(argv)
    if extra:
        raise SglangArgsError(f"unknown SGLang flag(s): {' '.join(extra)}")
    return ns


def _config(model_path: str, argv: list[str], ns: argparse.Namespace | None) -> SglangConfig:
    def get(dest: str, default: Any) -> Any:
        if ns is not None:
            value = getattr(ns, dest, None)
            return default if value is None else value
        return _raw(argv, dest, default)

    return SglangConfig(
        model_path=model_path, argv=tuple(argv), parsed=ns is not None,
        page_size=int(get("page_size", 1)), dp_size=int(get("dp_size", 1)),
        disaggregation_mode=str(get("disaggregation_mode", "null")),
        transfer_backend=str(get("disaggregation_transfer_backend", "mooncake")),
        host=str(get("host", "127.0.0.1")), bootstrap_port=int(get("disaggregation_bootstrap_port", 8998)),
        kv_events=kv_events_settings(get("kv_events_config", None)),
        enable_metrics=bool(get("enable_metrics", False)),
        incremental_output=bool(get("incremental_streaming_output", False)),
        skip_tokenizer_init=bool(get("skip_tokenizer_init", False)),
    )


def kv_events_settings(config_json: str | None) -> KvEventsSettings | None:
    """The subscriber's view of `--kv-events-config` (None: no ZMQ publisher)."""
    if not config_json:
        return None
    try:
        cfg = json.loads(config_json)
    except json.JSONDecodeError as e:
        raise SglangArgsError(f"--kv-events-config is not JSON: {e}") from e
    if not isinstance(cfg, dict):
        raise SglangArgsError("--kv-events-config must be a JSON object")
    if cfg.get("publisher", "null") != "zmq":
        return None
    return KvEventsSettings(endpoint=str(cfg.get("endpoint", "tcp://*:5557")),
                            replay_endpoint=cfg.get("replay_endpoint"), topic=str(cfg.get("topic", "")))


def _raw(argv: list[str], dest: str, default: Any) -> Any:
    values: tuple[str, ...] | None = None
    for occ in occurrences(argv):
        if occ.flag in ALIASES.get(dest, ()):
            values = occ.values
    if values is None:
        return default
    if dest in _SWITCHES:
        if values:
            raise SglangArgsError(f"{ALIASES[dest][0]} takes no value (got {' '.join(values)})")
        return True
    if len(values) != 1:
        raise SglangArgsError(f"{ALIASES[dest][0]} needs one value (got {len(values)})")
    return values[0]


def _raw_int(argv: list[str], dest: str, default: int) -> int:
    value = _raw(argv, dest, default)
    try:
        return int(value)
    except ValueError as e:
        raise SglangArgsError(f"{ALIASES[dest][0]} needs a whole number, not {value!r}") from e
