"""The import graph, read with ast (nothing is imported): layers point one way, and no module imports
itself back through others. Also the structural promises of the redesign: engines' capabilities are
types (no probes on engines in services/), only the engine registry knows engines by name, and the
router sees one kind of worker (no re-hashing)."""

from __future__ import annotations

import ast
import functools
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TOPS = ("protocol", "shared", "services")

# lowest first: a package imports only from its own layer's package or from layers below it.
# (a shared package missing here is not checked against the others: place a new one.)
LAYERS = [
    {"protocol"},
    {"shared.errors", "shared.http", "shared.parsers"},
    {"shared.model"},  # model files: tiny models, hub ids (shared.config resolves --model-path through it)
    {"shared.config", "shared.telemetry", "shared.kv", "shared.tokenizer"},
    {"shared.grammar"},
    {"shared.runtime"},
    {"shared.transfer", "shared.routing"},
    {"shared.multimodal"},
    {"shared.engine"},
    {"shared.cluster"},
    {"shared.cli"},
    {"services"},
]


@functools.cache
def modules() -> dict[str, Path]:
    out = {}
    for top in TOPS:
        for path in (ROOT / top).rglob("*.py"):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = path
    return out


@functools.cache
def tree(name: str) -> ast.Module:
    return ast.parse(modules()[name].read_text(encoding="utf-8"))


def imports(name: str) -> set[str]:
    """The project modules `name` imports, at module level, inside functions (lazy imports) or under
    `if TYPE_CHECKING:` (an import for an annotation still ties the two modules together)."""
    mods = modules()
    out: set[str] = set()
    for node in ast.walk(tree(name)):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for a in node.names:
                sub = f"{node.module}.{a.name}"
                out.add(sub if sub in mods else node.module)
    return {m for m in out if m in mods}


def package(name: str) -> str:
    parts = name.split(".")
    return parts[0] if parts[0] in ("protocol", "services") else ".".join(parts[:2])


def layer(pkg: str) -> int | None:
    return next((i for i, group in enumerate(LAYERS) if pkg in group), None)


def cycles() -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan)."""
    graph = {m: sorted(imports(m)) for m in modules()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for m in graph:
        if m not in index:
            visit(m)
    return found


def test_no_import_circle_among_protocol_shared_and_services():
    assert cycles() == []


def test_shared_never_imports_services_and_protocol_imports_nothing_of_the_project():
    wrong = [(m, i) for m in modules() for i in imports(m)
             if (m.startswith("shared") and i.startswith("services"))
             or (m.startswith("protocol") and not i.startswith("protocol"))]
    assert wrong == []


def test_no_layer_imports_upward():
    upward = []
    for m in modules():
        lm = layer(package(m))
        for i in imports(m):
            li = layer(package(i))
            if lm is None or li is None or package(i) == package(m):
                continue
            if li >= lm:
                upward.append(f"{m} -> {i}")
    assert upward == []


def calls(top: str) -> Iterator[tuple[str, ast.Call]]:
    for name in modules():
        if name.startswith(top):
            for node in ast.walk(tree(name)):
                if isinstance(node, ast.Call):
                    yield name, node


def _names_engine(node: ast.expr) -> bool:
    return (isinstance(node, ast.Name) and "engine" in node.id) or \
        (isinstance(node, ast.Attribute) and "engine" in node.attr)


def test_services_ask_engines_for_capabilities_by_type_not_by_probing():
    probes = [f"{m}:{c.lineno}" for m, c in calls("services")
              if isinstance(c.func, ast.Name) and c.func.id in ("hasattr", "getattr")
              and c.args and _names_engine(c.args[0])]
    assert probes == []


def test_only_the_engine_registry_branches_on_an_engines_name():
    allowed = ("shared.engine.registry", "shared.engine.sglang")  # the registry, and SGLang's own adapter
    branches = []
    for m in modules():
        if m.startswith(allowed):
            continue
        for node in ast.walk(tree(m)):
            if isinstance(node, ast.Compare) and any(
                    isinstance(x, ast.Constant) and x.value == "sglang" for x in [node.left, *node.comparators]):
                branches.append(f"{m}:{node.lineno}")
    assert branches == []


def test_the_router_does_not_rehash():
    for m in modules():
        if m.startswith(("shared.routing", "shared.kv", "services.router")):
            assert "rehash" not in modules()[m].read_text(encoding="utf-8"), m
