"""structlog set-up: events with fields, console or JSON lines, secrets redacted.

    configure_logging("info", json=True, service="decode")
    log = get_logger("shoal.decode")
    log.info("request_routed", worker=wid, overlap_blocks=3)

Standard-library loggers (nats, asyncio, libraries) go through the same
processors and renderer, so every line has one shape.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Mapping
from typing import Any, TextIO

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

REDACTED = "***"
NOISY_LOGGERS = ("nats", "asyncio", "urllib3", "opentelemetry")
_SECRET_PARTS = ("password", "passwd", "secret", "api_key", "apikey", "authorization", "nkey", "creds",
                 "credential", "cookie", "private_key")
_URL_USERINFO = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<userinfo>[^/@\s]+)@")
_HANDLER_NAME = "shoal"


def is_secret_key(key: str, value: Any = None) -> bool:
    """Whether a field's value must not be logged.

    `token` counts only as a whole last word holding a string, so `prompt_tokens`,
    `token_ids` and `first_token=17` stay visible while `nats_token="..."` does not.
    """
    k = key.lower().replace("-", "_")
    if any(part in k for part in _SECRET_PARTS):
        return True
    return (k == "token" or k.endswith("_token")) and isinstance(value, str | bytes)


def redact(value: Any, depth: int = 0) -> Any:
    """The value with secret-looking keys and URL passwords hidden (nested mappings too)."""
    if isinstance(value, str):
        return _URL_USERINFO.sub(_hide_userinfo, value) if "@" in value and "://" in value else value
    if isinstance(value, Mapping) and depth < 4:
        return {k: REDACTED if is_secret_key(str(k), v) else redact(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple) and depth < 4:
        return [redact(v, depth + 1) for v in value]
    return value


def redact_secrets(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    """structlog processor: no secret reaches a log line."""
    for key, value in event_dict.items():
        if is_secret_key(key, value):
            event_dict[key] = REDACTED
        elif isinstance(value, str | Mapping | list | tuple):
            event_dict[key] = redact(value)
    return event_dict


def configure_logging(level: str = "info", json: bool = False, service: str = "",
                      stream: TextIO | None = None) -> None:
    """Set up structlog and route stdlib logging through it. Safe to call again (reconfigures)."""
    shared = _shared_processors(service)
    structlog.configure(
        processors=[structlog.stdlib.filter_by_level, *shared,
                    structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
    renderer: Processor = (structlog.processors.JSONRenderer() if json
                           else structlog.dev.ConsoleRenderer(colors=_is_tty(stream),
                                                              exception_formatter=structlog.dev.plain_traceback))
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *_exc_processors(json), renderer],
    )
    _install_handler(formatter, stream, level)


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    """A logger that picks up the configuration at first use, so module-level loggers are fine."""
    return structlog.get_logger(name)


def _shared_processors(service: str) -> list[Processor]:
    processors: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.stdlib.PositionalArgumentsFormatter(),
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _add_trace_ids,
        redact_secrets,
    ]
    if service:
        processors.insert(0, _bind_service(service))
    return processors


def _exc_processors(json: bool) -> list[Processor]:
    # The console renderer prints tracebacks itself (plain: rich's would show locals, secrets included);
    # JSON needs them as a field.
    return [structlog.processors.format_exc_info] if json else []


def _bind_service(service: str) -> Processor:
    def add_service(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
        event_dict.setdefault("service", service)
        return event_dict

    return add_service


def _add_trace_ids(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    """Correlate log lines with traces when a recorded span is current."""
    from opentelemetry import trace

    ctx = trace.get_current_span().get_span_context()
    if ctx.is_valid and ctx.trace_flags.sampled:
        event_dict.setdefault("trace_id", format(ctx.trace_id, "032x"))
        event_dict.setdefault("span_id", format(ctx.span_id, "016x"))
    return event_dict


def _install_handler(formatter: logging.Formatter, stream: TextIO | None, level: str) -> None:
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == _HANDLER_NAME or _is_console(h)]:
        root.removeHandler(old)
    _stop_echoes()
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(formatter)
    root.addHandler(handler)
    root.setLevel(_level_number(level))
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(max(logging.WARNING, root.level))


def _is_console(handler: logging.Handler) -> bool:
    """A plain console handler another library put up (`logging.basicConfig`, SGLang's `configure_logger`).

    Left beside ours it would print every line a second time, unformatted. Subclasses (pytest's capture
    handlers, file handlers) are not plain and stay."""
    return type(handler) is logging.StreamHandler and handler.stream in (sys.stderr, sys.stdout)


def _stop_echoes() -> None:
    """Loggers with a console handler of their own that also propagate to the root print each line twice:
    drop their handler, so the line comes once, through ours."""
    for logger in list(logging.root.manager.loggerDict.values()):
        if isinstance(logger, logging.Logger) and logger.propagate:
            for h in [h for h in logger.handlers if _is_console(h)]:
                logger.removeHandler(h)


def _level_number(level: str) -> int:
    number = logging.getLevelName(level.upper())
    if not isinstance(number, int):
        raise ValueError(f"unknown log level {level!r}")
    return number


def _is_tty(stream: TextIO | None) -> bool:
    s = stream if stream is not None else sys.stderr
    return bool(getattr(s, "isatty", lambda: False)())


def _hide_userinfo(m: re.Match[str]) -> str:
    user, colon, _ = m.group("userinfo").partition(":")
    return f"{m.group('scheme')}{user}:{REDACTED}@" if colon else f"{m.group('scheme')}{REDACTED}@"
