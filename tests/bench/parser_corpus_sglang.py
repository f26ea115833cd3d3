"""SGLang's own parsers on shoal's parser corpus (whole outputs; the per-family "best flags" a user would set,
forcing the reasoning start where the family's template opens it), scored like shoal's corpus: calls, content
and reasoning as meant, no marker left in them (truncated cases: no marker, no crash).

    pip install --no-deps --target /tmp/sg sglang==0.5.23 partial-json-parser
    python -m tests.bench.parser_corpus_sglang --sglang-path /tmp/sg     # writes docs/agents_corpus_sglang.json

SGLang is imported with its serving-only dependencies it does not need here (pybase64, starlette, ...) stubbed,
CPU only. Then `python -m tests.bench.parser_corpus_report` adds the SGLang column to docs/AGENTS.md.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import sys
import types
from pathlib import Path
from typing import Any

from tests.fixtures.parser_corpus_gen import MARKER_WORDS, TOOLS
from tests.unit.test_parsers_corpus import CORPUS

OUT = Path(__file__).parents[2] / "docs" / "agents_corpus_sglang.json"
# family -> (SGLang tool parser, reasoning parser, force the reasoning start)
FLAGS: dict[str, tuple[str | None, str | None, bool]] = {
    "qwen2.5": ("qwen25", None, False), "qwen3": ("qwen25", "qwen3", False),
    "qwen3-thinking-2507": ("qwen25", "qwen3-thinking", True), "qwen3-coder": ("qwen3_coder", None, False),
    "qwen3-coder-no-opener": ("qwen3_coder", None, False), "qwen3.5": ("qwen3_coder", "qwen3-thinking", True),
    "deepseek-v3": ("deepseekv3", None, False), "deepseek-v3.1": ("deepseekv31", "deepseek-r1", True),
    "deepseek-v3.2": ("deepseekv32", "deepseek-r1", True), "deepseek-v4-dsml": ("deepseekv4", "deepseek-v4", True),
    "kimi-k2": ("kimi_k2", None, False), "kimi-k2-thinking": ("kimi_k2", "kimi_k2", False),
    "kimi-k2-thinking-implicit-end": ("kimi_k2", "kimi_k2", False),
    "kimi-k2.6": ("kimi_k2", "kimi_k2", True), "glm-4.5": ("glm45", "glm45", False),
    "glm-4.7": ("glm47", "glm45", True), "mistral-v0.3": ("mistral", None, False),
    "mistral-v11": ("mistral", None, False), "magistral-v13": ("mistral", "mistral", False),
    "magistral-2506": ("mistral", "mistral", False), "llama3.1": ("llama3", None, False),
    "llama4": ("pythonic", None, False), "gpt-oss": ("gpt-oss", "gpt-oss", False),
    "gpt-oss-header": ("gpt-oss", "gpt-oss", False), "functiongemma": (None, None, False),
    "minimax-m2": ("minimax-m2", "minimax", False),
}


class _Stub(types.ModuleType):
    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return _Stub(f"{self.__name__}.{name}") if name[:1].islower() else type(name, (), {
            "__init__": lambda s, *a, **k: None, "__call__": lambda s, *a, **k: None})


class _Stubs:
    def __init__(self) -> None:
        self.names: set[str] = set()

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> Any:
        return importlib.util.spec_from_loader(name, self) if name.split(".")[0] in self.names else None

    def create_module(self, spec: Any) -> types.ModuleType:
        m = _Stub(spec.name)
        m.__path__ = []  # type: ignore[attr-defined]
        return m

    def exec_module(self, module: types.ModuleType) -> None:
        pass


def load_sglang(path: str) -> tuple[Any, Any, Any, Any]:
    sys.path.insert(0, path)
    stubs = _Stubs()
    sys.meta_path.insert(0, stubs)
    for _ in range(100):
        try:
            fc = importlib.import_module("sglang.srt.function_call.function_call_parser")
            rp = importlib.import_module("sglang.srt.parser.reasoning_parser")
            proto = importlib.import_module("sglang.srt.entrypoints.openai.protocol")
            return fc.FunctionCallParser, rp.ReasoningParser, proto.Tool, proto.Function
        except ModuleNotFoundError as e:
            stubs.names.add((e.name or "").split(".")[0])
            for k in [k for k in sys.modules if k.startswith("sglang")]:
                del sys.modules[k]
    raise RuntimeError("could not import SGLang's parsers")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sglang-path", required=True)
    args = ap.parse_args()
    parser_cls, reasoning_cls, tool_cls, fn_cls = load_sglang(args.sglang_path)
    tools = [tool_cls(type="function", function=fn_cls(**t["function"])) for t in TOOLS]
    version = importlib.import_module("sglang.version").__version__ if importlib.util.find_spec(
        "sglang.version") else "?"
    families: dict[str, dict[str, int]] = {}
    for case in CORPUS:
        tool, reasoning, force = FLAGS[case["family"]]
        fam = families.setdefault(case["family"], {"cases": 0, "passed": 0})
        fam["cases"] += 1
        try:
            text, think = case["raw"], ""
            if reasoning:
                r, n = reasoning_cls(reasoning, stream_reasoning=False, force_reasoning=force).parse_non_stream(text)
                think, text = r or "", n or ""
            calls: list[tuple[str, Any]] = []
            if tool:
                text, items = parser_cls(tools, tool).parse_non_stream(text)
                calls = [(c.name, json.loads(c.parameters or "{}")) for c in items]
        except Exception:
            continue
        leaked = any(m in s for s in (text, think, *(n for n, _ in calls)) for m in MARKER_WORDS
                     if m not in json.dumps(case["calls"], ensure_ascii=False) + (case["content"] or "")
                     + (case["reasoning"] or ""))
        want = case["calls"] is None or ((text.strip(), think.strip(), [{"name": n, "arguments": a} for n, a in calls])
                                         == (case["content"], case["reasoning"], case["calls"]))
        fam["passed"] += want and not leaked
    OUT.write_text(json.dumps({"sglang": version, "flags": {f: list(v) for f, v in FLAGS.items()},
                               "families": families}, indent=1) + "\n")
    total = sum(f["cases"] for f in families.values())
    print(f"SGLang {version}: {sum(f['passed'] for f in families.values())} / {total} -> {OUT}")


if __name__ == "__main__":
    main()
