"""JSON schemas as xgrammar should see them.

xgrammar 0.2.9 lets raw control characters (U+0000..U+001F) into strings bounded by
`minLength`/`maxLength`, which is not JSON, and its byte-level matching of negated
character classes admits UTF-8 surrogates and overlong forms. Such a string becomes a
`pattern` of plain characters named by positive ranges (no escapes, no controls, no
surrogates), which xgrammar enforces exactly: the output stays valid UTF-8, valid JSON
and valid under the original schema. Specs that carry it must be dumped with
`ensure_ascii=False` (the ranges are real characters).
"""

from __future__ import annotations

import json
from typing import Any

_PLAIN_CHAR = "[ !#-\\[\\]-~\u00a0-\ud7ff\ue000-\uffff\U00010000-\U0010ffff]"
_SCHEMA_MAPS = ("properties", "$defs", "definitions", "patternProperties")
_SCHEMA_LISTS = ("anyOf", "oneOf", "allOf", "prefixItems")
_SCHEMA_ONE = ("items", "additionalProperties", "not", "contains")


def parse_schema(spec: str) -> Any:
    """The schema in `spec`; ValueError says where the JSON is broken."""
    try:
        return json.loads(spec)
    except json.JSONDecodeError as e:
        raise ValueError(f"the schema is not JSON: {e}") from e


def fix_schema(schema: Any) -> Any:
    """A copy of `schema` with length-bounded strings written as patterns (see the module docstring)."""
    if isinstance(schema, list):
        return [fix_schema(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = dict(schema)
    for key in _SCHEMA_MAPS:
        if isinstance(out.get(key), dict):
            out[key] = {k: fix_schema(v) for k, v in out[key].items()}
    for key in (*_SCHEMA_LISTS, *_SCHEMA_ONE):
        if key in out:
            out[key] = fix_schema(out[key])
    bounded = "minLength" in out or "maxLength" in out
    for key in ("minLength", "maxLength"):
        value = out.get(key)
        if key in out and (type(value) is not int or not 0 <= value < 2**31):
            raise ValueError(f"{key} must be a non-negative integer, not {value!r}"[:200])
    if out.get("type") == "string" and bounded and not {"pattern", "format", "enum", "const"} & out.keys():
        lo, hi = int(out.pop("minLength", 0)), out.pop("maxLength", None)
        out["pattern"] = f"^{_PLAIN_CHAR}{{{lo},{'' if hi is None else int(hi)}}}$"
    return out
