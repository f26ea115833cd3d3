"""`--config FILE.yaml [--config-key a.b]`: flags from a YAML section, command line wins.

A section maps flag names to values:

    decode:
      model-path: /models/tiny      ->  --model-path=/models/tiny
      log_json: true                ->  --log-json        (false: left out)
      hosts: [a, b]                 ->  --hosts a b
      kv-events-config: {port: 1}   ->  --kv-events-config={"port":1}

The file's flags go before the command line's, so argparse's last-wins makes
explicit flags override the file.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping
from typing import Any

import yaml

CONFIG_FLAG = "--config"
KEY_FLAG = "--config-key"


class ConfigError(ValueError):
    """A config file that cannot be used; says which file and key."""

    def __init__(self, message: str, file: str | None = None, key: str | None = None) -> None:
        where = ", ".join(part for part in (f"file {file}" if file else "", f"key {key!r}" if key else "") if part)
        super().__init__(f"{message} ({where})" if where else message)
        self.file = file
        self.key = key


def expand_config_argv(argv: list[str]) -> list[str]:
    """argv with --config/--config-key replaced by the YAML section's flags, placed first."""
    files, key, rest = _split_config_flags(argv)
    if not files:
        if key is not None:
            raise ConfigError(f"{KEY_FLAG} needs {CONFIG_FLAG} FILE.yaml", key=key)
        return list(rest)
    expanded: list[str] = []
    for path in files:
        expanded += section_to_argv(load_section(path, key), path, key)
    return expanded + rest


def load_section(path: str, key: str | None = None) -> Mapping[str, Any]:
    """The mapping at dotted `key` in the YAML file (the whole document when key is None)."""
    data = _read_yaml(path, key)
    if data is None and key is None:
        return {}
    node = _select(data, key.split(".") if key else [], path, key)
    if node is None:
        return {}
    if not isinstance(node, Mapping):
        raise ConfigError(f"section is a {type(node).__name__}, expected a mapping of flag: value", path, key)
    return node


def section_to_argv(section: Mapping[str, Any], path: str = "", key: str | None = None) -> list[str]:
    out: list[str] = []
    for name, value in section.items():
        out += _flag_tokens(_flag_name(name, path, key), value)
    return out


def _split_config_flags(argv: list[str]) -> tuple[list[str], str | None, list[str]]:
    files: list[str] = []
    key: str | None = None
    rest: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            rest += argv[i:]
            break
        flag, eq, inline = arg.partition("=")
        if flag not in (CONFIG_FLAG, KEY_FLAG):
            rest.append(arg)
            i += 1
            continue
        if eq:
            value, i = inline, i + 1
        elif i + 1 < len(argv):
            value, i = argv[i + 1], i + 2
        else:
            raise ConfigError(f"{flag} needs a value")
        if flag == CONFIG_FLAG:
            files.append(value)
        else:
            key = value
    return files, key, rest


def _read_yaml(path: str, key: str | None) -> Any:
    try:
        with open(path, encoding="utf-8") as f:
            return yaml.safe_load(f)
    except FileNotFoundError:
        raise ConfigError("config file not found", path, key) from None
    except OSError as e:
        raise ConfigError(f"cannot read config file: {e.strerror}", path, key) from None
    except yaml.YAMLError as e:
        raise ConfigError(f"invalid YAML: {_yaml_problem(e)}", path, key) from None


def _yaml_problem(e: yaml.YAMLError) -> str:
    mark = getattr(e, "problem_mark", None)
    problem = getattr(e, "problem", None) or str(e)
    return f"{problem} at line {mark.line + 1}, column {mark.column + 1}" if mark else problem


def _select(node: Any, parts: list[str], path: str, key: str | None) -> Any:
    """Walk the dotted path; a key that itself contains dots (e.g. a model name) also matches."""
    if not parts:
        return node
    if not isinstance(node, Mapping):
        raise ConfigError(f"cannot descend into a {type(node).__name__}", path, key)
    by_name = {str(k): v for k, v in node.items()}
    for n in range(len(parts), 0, -1):
        name = ".".join(parts[:n])
        if name in by_name:
            return _select(by_name[name], parts[n:], path, key)
    known = ", ".join(sorted(by_name)) or "none"
    raise ConfigError(f"key {parts[0]!r} not found; available: {known}", path, key)


def _flag_name(name: Any, path: str, key: str | None) -> str:
    if not isinstance(name, str) or not name.strip("-_"):
        raise ConfigError(f"flag name must be a non-empty string, got {name!r}", path, key)
    return "--" + name.lstrip("-").replace("_", "-")


def _flag_tokens(flag: str, value: Any) -> list[str]:
    if value is None or value is False:
        return []
    if value is True:
        return [flag]
    if isinstance(value, list | tuple):
        return [flag, *(_scalar(v) for v in value)] if value else []
    return [f"{flag}={_scalar(value)}"]


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Mapping | list):
        return json.dumps(value, separators=(",", ":"), default=str)
    return str(value)


def expand_or_exit(parser: argparse.ArgumentParser, argv: list[str]) -> list[str]:
    """expand_config_argv for a service's main: a bad config file is a usage error, not a traceback."""
    try:
        return expand_config_argv(argv)
    except ConfigError as e:
        parser.error(str(e))
