"""XML-style parameter values typed by the tool's JSON schema (the templates write strings raw, the rest as JSON)."""

from __future__ import annotations

import ast
import json
from typing import Any

_PY = {"True": True, "False": False, "None": None, "true": True, "false": False, "null": None}
_KIND = {bool: "boolean", int: "integer", float: "number", str: "string", list: "array", dict: "object",
         type(None): "null"}


def schema_types(schema: Any) -> set[str]:
    """The JSON types a schema allows (type, anyOf / oneOf / allOf members, enum and const values); empty: any."""
    if not isinstance(schema, dict):
        return set()
    kinds: set[str] = set()
    t = schema.get("type")
    if isinstance(t, str):
        kinds.add(t)
    elif isinstance(t, list):
        kinds.update(x for x in t if isinstance(x, str))
    for key in ("anyOf", "oneOf", "allOf"):
        for sub in schema.get(key) or []:
            kinds |= schema_types(sub)
    for value in [*(schema.get("enum") or []), *([schema["const"]] if "const" in schema else [])]:
        kinds.add(_KIND.get(type(value), "string"))
    if not kinds and isinstance(schema.get("properties"), dict):
        kinds.add("object")
    return kinds


def _literal(text: str) -> tuple[bool, Any]:
    """(True, value) for JSON or a Python literal (True / None / single quotes), else (False, None)."""
    s = text.strip()
    if s in _PY:
        return True, _PY[s]
    try:
        return True, json.loads(s)
    except (json.JSONDecodeError, ValueError):
        pass
    if s[:1] in "[{(":
        try:
            return True, ast.literal_eval(s)
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            return False, None
    return False, None


def _fits(value: Any, kinds: set[str]) -> bool:
    kind = _KIND.get(type(value), "")
    return kind in kinds or (kind == "integer" and "number" in kinds)


def typed_value(text: str, schema: Any) -> Any:
    """A parameter's raw text as the value the schema asks for: raw text for strings, parsed JSON (or Python
    literals the model wrote) for numbers, booleans, null, arrays and objects. Unknown parameters: objects and
    arrays parsed, the rest kept as text."""
    kinds = schema_types(schema)
    if kinds == {"string"}:
        return text
    ok, value = _literal(text)
    if isinstance(value, tuple):
        value = list(value)
    if not kinds:
        return value if ok and isinstance(value, dict | list) else text
    if ok and _fits(value, kinds):
        if isinstance(value, float) and value.is_integer() and "integer" in kinds and "number" not in kinds:
            return int(value)
        return value
    if "string" in kinds:
        return text
    return value if ok else text


def tool_params(tools: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Tool name -> its parameters' property schemas."""
    out: dict[str, dict[str, Any]] = {}
    for t in tools:
        fn = t.get("function") if isinstance(t, dict) else None
        if isinstance(fn, dict) and isinstance(fn.get("name"), str):
            params = fn.get("parameters")
            props = params.get("properties") if isinstance(params, dict) else None
            out[fn["name"]] = props if isinstance(props, dict) else {}
    return out


def arg_item(key: str, value: Any) -> str:
    """One `"key": value` of an arguments object, as the XML formats' arguments are built."""
    return json.dumps(key, ensure_ascii=False) + ": " + json.dumps(value, ensure_ascii=False)
