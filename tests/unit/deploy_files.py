"""Helpers of tests/unit/test_deploy_files.py (the deploy files read as text, and the services' own
parsers): which containers run which service with which argv, and how to parse it."""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import os
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
COMPOSE = ROOT / "deploy" / "compose.yaml"
DOCKERFILE = ROOT / "deploy" / "docker" / "Dockerfile"
DOCKERFILE_SGLANG = ROOT / "deploy" / "docker" / "Dockerfile.sglang"
RENDER_CONFIG = ROOT / "deploy" / "nats" / "render_config.py"

# Images not built from this repository: pinned tags only (docs/DEPLOY.md says they are assumed).
THIRD_PARTY_IMAGES = {"nats:2.11-alpine", "jaegertracing/all-in-one:1.62.0", "prom/prometheus:v3.5.0",
                      "grafana/grafana-oss:12.1.1"}
SHOAL_IMAGE = re.compile(r"^shoal/(?P<target>[a-z0-9-]+):dev$")
SYSTEM_PORT = 9090
WORKLOAD_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "Job"}
UNUSED_SECTIONS_ALLOWED = {"common"}  # the YAML anchor the other sections merge
ROUTER_DRAIN_S = 5.0  # services/router/main.py drains its server for 5 s; it has no --drain-grace


# ---- the files ------------------------------------------------------------------------------

def _rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


def _load_all(path: Path) -> list[Any]:
    with path.open(encoding="utf-8") as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


K8S_FILES = sorted(K8S.rglob("*.yaml"))
K8S_DOCS: dict[Path, list[Any]] = {p: _load_all(p) for p in K8S_FILES}
COMPOSE_DOC: dict[str, Any] = _load_all(COMPOSE)[0]


def _dockerfile_targets(path: Path) -> dict[str, list[str]]:
    """Stage name -> its ENTRYPOINT (exec form), for the stages that have one."""
    out: dict[str, list[str]] = {}
    stage = None
    for line in path.read_text(encoding="utf-8").splitlines():
        m = re.match(r"^FROM\s+\S+(?:\s+AS\s+(\S+))?\s*$", line, re.IGNORECASE)
        if m:
            stage = m.group(1)
        elif line.startswith("ENTRYPOINT") and stage:
            out[stage] = json.loads(line[len("ENTRYPOINT"):])
    return out


def _image_entrypoints() -> dict[str, list[str]]:
    """Image name -> ENTRYPOINT: shoal/<target>:dev per Dockerfile target, shoal/decode-sglang:dev."""
    images = {f"shoal/{t}:dev": ep for t, ep in _dockerfile_targets(DOCKERFILE).items()}
    sglang = [json.loads(line[len("ENTRYPOINT"):]) for line in DOCKERFILE_SGLANG.read_text().splitlines()
              if line.startswith("ENTRYPOINT")]
    images["shoal/decode-sglang:dev"] = sglang[-1]
    return images


IMAGES = _image_entrypoints()


def _render_config() -> Any:
    spec = importlib.util.spec_from_file_location("shoal_render_config", RENDER_CONFIG)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


NATS_ROLES: tuple[str, ...] = tuple(_render_config().ROLES)


# ---- the containers -------------------------------------------------------------------------

@dataclass
class K8sContainer:
    file: Path
    workload: dict[str, Any]
    pod: dict[str, Any]
    spec: dict[str, Any]
    init: bool

    @property
    def id(self) -> str:
        kind, name = self.workload["kind"], self.workload["metadata"]["name"]
        return f"{_rel(self.file)}:{kind}/{name}/{self.spec['name']}"


def _k8s_containers() -> list[K8sContainer]:
    out = []
    for path, docs in K8S_DOCS.items():
        for doc in docs:
            if doc.get("kind") not in WORKLOAD_KINDS:
                continue
            pod = doc["spec"]["template"]["spec"]
            for init, key in ((True, "initContainers"), (False, "containers")):
                out += [K8sContainer(path, doc, pod, c, init) for c in pod.get(key) or []]
    return out


CONTAINERS = _k8s_containers()
SERVICE_CONTAINERS = [c for c in CONTAINERS if not c.init and c.spec["image"].startswith("shoal/")
                      and c.workload["kind"] != "Job"]  # a Job runs a CLI verb (shoal setup), not a service
JOB_CONTAINERS = [c for c in CONTAINERS if c.workload["kind"] == "Job"]


def _full_argv(image: str, command: list[str] | None, args: list[str] | None) -> list[str]:
    """What the container runs: `command` replaces the image's ENTRYPOINT (and CMD); `args` the CMD."""
    if command:
        return [*command, *(args or [])]
    assert image in IMAGES, f"{image} is not an image this repository builds"
    return [*IMAGES[image], *(args or [])]


def _service_argv(argv: list[str]) -> tuple[str, list[str]] | None:
    """(`services.NAME`, its arguments) for `python -m services.NAME ...`; None for anything else."""
    for i, tok in enumerate(argv[:-1]):
        if tok == "-m" and argv[i + 1].startswith("services."):
            return argv[i + 1], argv[i + 2:]
    return None


def _flag_value(argv: list[str], flag: str) -> str | None:
    for i, tok in enumerate(argv):
        if tok == flag and i + 1 < len(argv):
            return argv[i + 1]
        if tok.startswith(flag + "="):
            return tok.split("=", 1)[1]
    return None


def _configmaps() -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {}
    for docs in K8S_DOCS.values():
        for doc in docs:
            if doc.get("kind") == "ConfigMap":
                out[doc["metadata"]["name"]] = doc.get("data") or {}
    return out


CONFIGMAPS = _configmaps()


def _config_text(c: K8sContainer, path: str) -> tuple[str, str]:
    """(ConfigMap name, file text) of the file at `path` in the container: its mount, its volume."""
    p = PurePosixPath(path)
    for m in c.spec.get("volumeMounts") or []:
        if PurePosixPath(m["mountPath"]) == p.parent:
            vol = next(v for v in c.pod.get("volumes") or [] if v["name"] == m["name"])
            assert "configMap" in vol, f"{c.id}: {path} is not on a ConfigMap volume"
            name = vol["configMap"]["name"]
            assert name in CONFIGMAPS, f"{c.id}: ConfigMap {name} is not in deploy/k8s"
            assert p.name in CONFIGMAPS[name], f"{c.id}: ConfigMap {name} has no key {p.name}"
            return name, CONFIGMAPS[name][p.name]
    raise AssertionError(f"{c.id}: nothing is mounted at {p.parent} (for --config {path})")


# ---- parsing a service's argv with its own parser -------------------------------------------

def _parse_fn(module: str) -> Callable[[list[str]], Any]:
    """The service's own `parse(argv)`: services/NAME/args.py, else services/NAME/main.py."""
    for sub in ("args", "main"):
        try:
            mod = importlib.import_module(f"{module}.{sub}")
        except ModuleNotFoundError as e:
            if e.name != f"{module}.{sub}":
                raise
            continue
        if hasattr(mod, "parse"):
            return mod.parse
    raise AssertionError(f"{module} has no parse(argv) in args.py or main.py")


@dataclass
class Parsed:
    config: Any
    options: set[str] = field(default_factory=set)  # every option string the service's parser defines


def _clean_env(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> None:
    """Only the container's own environment reaches the parsers' env defaults."""
    for k in list(os.environ):
        if k.startswith(("NATS_", "SHOAL_", "OTEL_")):
            monkeypatch.delenv(k)
    for k, v in env.items():
        monkeypatch.setenv(k, str(v))


def _parse(module: str, argv: list[str], where: str, monkeypatch: pytest.MonkeyPatch,
           capsys: pytest.CaptureFixture[str]) -> Parsed:
    parse = _parse_fn(module)
    made: list[argparse.ArgumentParser] = []
    init = argparse.ArgumentParser.__init__

    def recording_init(self: argparse.ArgumentParser, *a: Any, **k: Any) -> None:
        init(self, *a, **k)
        made.append(self)

    monkeypatch.setattr(argparse.ArgumentParser, "__init__", recording_init)
    try:
        config = parse(argv)
    except SystemExit as e:
        err = capsys.readouterr().err.strip().splitlines()
        pytest.fail(f"{where}: `python -m {module}` rejects its flags (exit {e.code}): "
                    f"{err[-1] if err else '?'}\n  argv: {argv}")
    finally:
        monkeypatch.setattr(argparse.ArgumentParser, "__init__", init)
    parsers = [p for p in made if "--config-key" in p._option_string_actions]
    assert parsers, f"{where}: no parser of {module} was seen"
    return Parsed(config, set(parsers[-1]._option_string_actions))


def _flag(name: str) -> str:
    return "--" + str(name).lstrip("-").replace("_", "-")  # as shared/config/yaml_config.py spells it


def _assert_exact_flags(flags: list[str], parsed: Parsed, where: str, module: str) -> None:
    """Every flag by its full name: argparse accepts unique prefixes, a misspelling may slip through."""
    engine = getattr(getattr(parsed.config, "engine", None), "engine", None)
    unknown = [f for f in flags if f not in parsed.options]
    if engine == "sglang":  # unknown flags pass through to SGLang (docs/SGLANG.md); not checkable here
        return
    assert not unknown, f"{where}: {module} has no flag(s) {unknown} (a typo, or a renamed flag?)"


# ---- the NATS role each service runs as -----------------------------------------------------

def _expected_role(module: str, cfg: Any) -> str:
    """The render_config.py role (NATS user) a service with this parsed config needs."""
    name = module.split(".", 1)[1]
    if name != "decode":
        return name
    if cfg.internal:
        return "vlm_worker"
    return "decode" if cfg.disaggregation_mode == "decode" else "worker"


def _secret_key(spec: dict[str, Any], var: str) -> dict[str, Any] | None:
    for e in spec.get("env") or []:
        if e["name"] == var:
            return (e.get("valueFrom") or {}).get("secretKeyRef")
    return None


# ---- kubernetes: the files ------------------------------------------------------------------


def _assert_known_image(image: str, where: str) -> None:
    if image in THIRD_PARTY_IMAGES:
        return
    m = SHOAL_IMAGE.match(image)
    assert m, f"{where}: image {image!r} is neither shoal/<target>:dev nor a known third-party image"
    assert image in IMAGES, f"{where}: {image}: no Dockerfile target {m['target']!r} " \
                            f"(targets: {sorted(IMAGES)})"


def _needs(module: str, cfg: Any) -> dict[str, bool]:
    """Which kind of tiny model a service needs: a VLM behind encode/processor, a diffusion LM."""
    vision = module in ("services.encode", "services.processor") or bool(getattr(cfg, "internal", False))
    engine = getattr(getattr(cfg, "engine", None), "engine", None)
    return {"vision": vision, "diffusion": engine == "diffusion"}


def _make_tiny(argv: list[str]) -> argparse.Namespace | None:
    """The parsed `shoal model make-tiny ...` (the CLI's own parser), or None for another command."""
    if argv[:3] != ["shoal", "model", "make-tiny"]:
        return None
    from shared.cli import build_parser

    return build_parser().parse_args(argv[1:])
