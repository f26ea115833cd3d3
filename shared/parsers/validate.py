"""The request's tools, checked before anything is parsed with them (ValueError names the field)."""

from __future__ import annotations

from typing import Any


def check_tools(tools: Any) -> list[dict[str, Any]]:
    """`tools` as a list of function tools with object parameter schemas and distinct names."""
    if tools is None:
        return []
    if not isinstance(tools, list):
        raise ValueError("tools must be a list of {'type': 'function', 'function': {...}}")
    seen: dict[str, int] = {}
    for i, t in enumerate(tools):
        fn = t.get("function") if isinstance(t, dict) else None
        if not isinstance(t, dict) or t.get("type") != "function" or not isinstance(fn, dict) \
                or not isinstance(fn.get("name"), str) or not fn["name"]:
            raise ValueError(f"tools[{i}] must be {{'type': 'function', 'function': {{'name': ...}}}}")
        params = fn.get("parameters")
        if params is not None and (not isinstance(params, dict) or params.get("type", "object") != "object"
                                   or not isinstance(params.get("properties", {}), dict)):
            raise ValueError(f"tools[{i}].function.parameters must be a JSON schema of an object "
                             "({'type': 'object', 'properties': {...}})")
        name = fn["name"]
        if name in seen:
            raise ValueError(f"tools[{i}].function.name {name!r} repeats tools[{seen[name]}]: tool names must differ")
        seen[name] = i
    return list(tools)
