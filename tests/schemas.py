"""Generated JSON schemas for structured-output tests and benchmarks: nested objects, arrays, enums, required
fields, bounded strings and numbers (bounded, so even a random-weight model's constrained output ends)."""

from __future__ import annotations

import random
from typing import Any


def _leaf(rng: random.Random) -> dict[str, Any]:
    kind = rng.choice(["string", "integer", "enum", "boolean"])
    if kind == "string":
        return {"type": "string", "maxLength": rng.randint(1, 8)}
    if kind == "integer":
        lo = rng.randint(-50, 50)
        return {"type": "integer", "minimum": lo, "maximum": lo + rng.randint(0, 500)}
    if kind == "enum":
        return {"enum": rng.sample(["red", "green", "blue", "ünï", "a b", "x"], rng.randint(1, 4))}
    return {"type": "boolean"}


def _value(rng: random.Random, depth: int) -> dict[str, Any]:
    roll = rng.random()
    if depth > 0 and roll < 0.25:
        return _object(rng, depth - 1)
    if depth > 0 and roll < 0.45:
        return {"type": "array", "items": _value(rng, depth - 1), "maxItems": rng.randint(1, 3)}
    return _leaf(rng)


def _object(rng: random.Random, depth: int) -> dict[str, Any]:
    names = rng.sample(["id", "name", "tags", "size", "kind", "meta", "items", "ok", "score", "owner"],
                       rng.randint(1, 4))
    props = {n: _value(rng, depth) for n in names}
    return {"type": "object", "properties": props, "required": rng.sample(names, rng.randint(1, len(names))),
            "additionalProperties": False}


def schemas(n: int = 20, seed: int = 11) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    return [_object(rng, depth=2) for _ in range(n)]
