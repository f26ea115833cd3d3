"""The deploy files stay honest: manifests and compose parse, every flag they pass exists.

No processes, no network, no cluster: the YAML under deploy/k8s and deploy/compose.yaml is read
as text and checked against the code it deploys:

- every container that runs a shoal service (which one: its `command`, or its image's Dockerfile
  ENTRYPOINT) has its argv -- the image's ENTRYPOINT arguments, then the container's, with
  `--config FILE --config-key SECTION` pointing at the ConfigMap's text -- run through that
  service's own `parse`, and each flag in the SECTION (and on the command line) must be a flag the
  parser defines by exactly that name (argparse would take a unique prefix: a misspelling that
  happens to be a prefix of another flag is caught here);
- what the manifests say about a service agrees with what the parsed config says: system port 9090
  and probes on it, the grace period longer than the drain grace, the model directory made by an
  init container (`--vision` / `--diffusion` where the service needs it), the NATS user of the
  service's role in deploy/nats/render_config.py;
- every image is a Dockerfile target (`shoal/<target>:dev`) or a known third-party image;
- every file under deploy/k8s belongs to exactly one kustomization, and no ConfigMap section is
  left unused.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import os
import re
import shlex
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml

from shared.config.yaml_config import load_section

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
COMPOSE = ROOT / "deploy" / "compose.yaml"
DOCKERFILE = ROOT / "deploy" / "docker" / "Dockerfile"
DOCKERFILE_SGLANG = ROOT / "deploy" / "docker" / "Dockerfile.sglang"
RENDER_CONFIG = ROOT / "deploy" / "nats" / "render_config.py"

# Images not built from this repository: pinned tags only (docs/DEPLOY.md says they are assumed).
THIRD_PARTY_IMAGES = {"nats:2.11-alpine", "jaegertracing/all-in-one:1.62.0"}
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
SERVICE_CONTAINERS = [c for c in CONTAINERS if not c.init and c.spec["image"].startswith("shoal/")]


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

def test_every_k8s_yaml_parses() -> None:
    assert K8S_FILES, "no YAML under deploy/k8s"
    for path, docs in K8S_DOCS.items():
        assert docs, f"{_rel(path)} is empty"
        for doc in docs:
            assert isinstance(doc, dict) and doc.get("apiVersion") and doc.get("kind"), \
                f"{_rel(path)}: a document without apiVersion/kind"


def _kustomizations() -> dict[Path, dict[str, Any]]:
    return {p.parent: docs[0] for p, docs in K8S_DOCS.items() if p.name == "kustomization.yaml"}


def test_kustomizations_cover_every_manifest_once() -> None:
    kusts = _kustomizations()
    assert K8S in kusts, "deploy/k8s/kustomization.yaml (the base) is missing"
    listed: dict[Path, list[Path]] = {}
    for d, k in kusts.items():
        assert k["kind"] == "Kustomization", f"{_rel(d)}/kustomization.yaml is a {k['kind']}"
        for res in k.get("resources") or []:
            target = (d / res).resolve()
            assert target.exists(), f"{_rel(d)}/kustomization.yaml lists {res}, which does not exist"
            if target.is_dir():
                assert (target / "kustomization.yaml").exists(), f"{res}: a directory without a kustomization"
                assert not d.is_relative_to(target), f"{_rel(d)} includes {res}, a directory above it (a cycle)"
            else:
                listed.setdefault(target, []).append(d)
    manifests = [p for p in K8S_FILES if p.name != "kustomization.yaml"]
    for p in manifests:
        owners = listed.get(p.resolve(), [])
        assert len(owners) == 1, f"{_rel(p)} is in {len(owners)} kustomizations, not exactly one"
    base = {Path(r).name for r in kusts[K8S]["resources"]}
    assert {"nats.yaml", "config.yaml", "frontend.yaml", "worker.yaml"} <= base, \
        "`kubectl apply -k deploy/k8s` must still give the base cluster"


def test_extras_read_configmaps_from_the_base() -> None:
    """The opt-in directories are applied on top of the base: what they mount must come from it."""
    base_maps = {doc["metadata"]["name"] for r in _kustomizations()[K8S]["resources"]
                 for doc in K8S_DOCS.get(K8S / r, []) if doc.get("kind") == "ConfigMap"}
    for c in CONTAINERS:
        for v in c.pod.get("volumes") or []:
            if "configMap" in v:
                assert v["configMap"]["name"] in base_maps, f"{c.id}: ConfigMap {v['configMap']['name']}"


def test_workload_selectors_match_their_pods() -> None:
    for docs in K8S_DOCS.values():
        for doc in docs:
            if doc.get("kind") in WORKLOAD_KINDS - {"Job"}:
                sel = doc["spec"]["selector"]["matchLabels"]
                labels = doc["spec"]["template"]["metadata"]["labels"]
                assert sel.items() <= labels.items(), f"{doc['metadata']['name']}: selector {sel} vs {labels}"


# ---- kubernetes: images and NATS users ------------------------------------------------------

def _assert_known_image(image: str, where: str) -> None:
    if image in THIRD_PARTY_IMAGES:
        return
    m = SHOAL_IMAGE.match(image)
    assert m, f"{where}: image {image!r} is neither shoal/<target>:dev nor a known third-party image"
    assert image in IMAGES, f"{where}: {image}: no Dockerfile target {m['target']!r} " \
                            f"(targets: {sorted(IMAGES)})"


@pytest.mark.parametrize("c", CONTAINERS, ids=lambda c: c.id)
def test_k8s_image_is_built_here_or_known(c: K8sContainer) -> None:
    _assert_known_image(c.spec["image"], c.id)


@pytest.mark.parametrize("c", CONTAINERS, ids=lambda c: c.id)
def test_k8s_nats_user_is_a_role(c: K8sContainer) -> None:
    user = _secret_key(c.spec, "NATS_USER")
    password = _secret_key(c.spec, "NATS_PASSWORD")
    if user is None:
        assert password is None, f"{c.id}: NATS_PASSWORD without NATS_USER"
        return
    role = user["key"].removesuffix("-user")
    assert user["key"] == f"{role}-user" and role in NATS_ROLES, \
        f"{c.id}: secret key {user['key']!r} is not <role>-user for a role of render_config.py {NATS_ROLES}"
    assert password is not None and password["key"] == f"{role}-password", \
        f"{c.id}: NATS_PASSWORD must come from key {role}-password"
    for ref in (user, password):
        assert ref["name"] == "shoal-nats" and ref.get("optional") is True, \
            f"{c.id}: NATS credentials come from the optional Secret shoal-nats"


# ---- kubernetes: each service's flags through its own parser --------------------------------

@pytest.mark.parametrize("c", SERVICE_CONTAINERS, ids=lambda c: c.id)
def test_k8s_service_flags_parse(c: K8sContainer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    argv = _full_argv(c.spec["image"], c.spec.get("command"), c.spec.get("args"))
    found = _service_argv(argv)
    assert found, f"{c.id}: runs {argv}, not `python -m services.NAME`"
    module, sargv = found
    if c.spec["image"] != "shoal/decode-sglang:dev":
        target = SHOAL_IMAGE.match(c.spec["image"])
        assert target and module == f"services.{target['target']}", \
            f"{c.id}: image {c.spec['image']} runs {module}"

    config_path, key = _flag_value(sargv, "--config"), _flag_value(sargv, "--config-key")
    section_flags: list[str] = []
    if config_path:
        _, text = _config_text(c, config_path)
        local = tmp_path / "cfg.yaml"
        local.write_text(text, encoding="utf-8")
        sargv = [str(local) if tok == config_path else tok for tok in sargv]
        section = load_section(str(local), key)  # the loader the services use
        assert section, f"{c.id}: section {key!r} of {config_path} is empty"
        section_flags = [_flag(k) for k in section]
    plain_env = {e["name"]: e["value"] for e in c.spec.get("env") or [] if "value" in e}
    _clean_env(monkeypatch, plain_env)
    parsed = _parse(module, sargv, c.id, monkeypatch, capsys)
    cmdline_flags = [t.split("=", 1)[0] for t in sargv if t.startswith("--")]
    _assert_exact_flags(section_flags + cmdline_flags, parsed, c.id, module)
    cfg = parsed.config

    # the manifest agrees with the parsed config
    assert cfg.common.system_port == SYSTEM_PORT and cfg.common.system_host == "0.0.0.0", \
        f"{c.id}: system port {cfg.common.system_host}:{cfg.common.system_port}, probes expect 0.0.0.0:9090"
    ports = {p["name"]: p["containerPort"] for p in c.spec.get("ports") or []}
    assert ports.get("system") == SYSTEM_PORT, f"{c.id}: container port `system` must be {SYSTEM_PORT}"
    for probe, path in (("readinessProbe", "/ready"), ("livenessProbe", "/live"), ("startupProbe", "/live")):
        if probe == "startupProbe" and probe not in c.spec:
            continue
        get = c.spec[probe]["httpGet"]
        assert (get["path"], get["port"]) == (path, "system"), f"{c.id}: {probe} must GET {path} on port system"
    ann = c.workload["spec"]["template"]["metadata"].get("annotations") or {}
    assert ann.get("prometheus.io/scrape") == "true" and ann.get("prometheus.io/port") == str(SYSTEM_PORT), \
        f"{c.id}: Prometheus annotations missing or not on {SYSTEM_PORT}"
    drain = getattr(cfg, "drain_grace", ROUTER_DRAIN_S)
    grace = c.pod.get("terminationGracePeriodSeconds", 30)
    assert grace > drain, f"{c.id}: terminationGracePeriodSeconds {grace} must exceed the drain grace {drain}"

    # its model directory is made by an init container of the pod, of the right kind
    if getattr(cfg, "model_path", ""):
        _assert_model_made(c, module, cfg)

    # its NATS user is its role's
    user = _secret_key(c.spec, "NATS_USER")
    role = _expected_role(module, cfg)
    assert user is not None and user["key"] == f"{role}-user", \
        f"{c.id}: {module} runs as NATS role {role!r}: NATS_USER from key {role}-user"


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


def _assert_model_made(c: K8sContainer, module: str, cfg: Any) -> None:
    made = []
    for init in c.pod.get("initContainers") or []:
        ns = _make_tiny(_full_argv(init["image"], init.get("command"), init.get("args")))
        if ns is not None and PurePosixPath(ns.dir) == PurePosixPath(cfg.model_path):
            made.append((init, ns))
    assert made, f"{c.id}: model-path {cfg.model_path} is made by no init container"
    init, ns = made[0]
    mounts = {m["name"]: m["mountPath"] for m in c.spec.get("volumeMounts") or []}
    shared = [m for m in init.get("volumeMounts") or [] if mounts.get(m["name"]) == m["mountPath"]
              and PurePosixPath(cfg.model_path).is_relative_to(m["mountPath"])]
    assert shared, f"{c.id}: the init container's {ns.dir} is not on a volume the service mounts at the same path"
    for kind, needed in _needs(module, cfg).items():
        assert getattr(ns, kind) == needed, f"{c.id}: {module} needs make-tiny {'with' if needed else 'without'} " \
                                            f"--{kind}"


def test_every_config_section_is_used() -> None:
    used: dict[str, set[str]] = {}
    for c in SERVICE_CONTAINERS:
        found = _service_argv(_full_argv(c.spec["image"], c.spec.get("command"), c.spec.get("args")))
        if not found:
            continue
        path, key = _flag_value(found[1], "--config"), _flag_value(found[1], "--config-key")
        if path and key:
            used.setdefault(_config_text(c, path)[0], set()).add(key)
    for name, data in CONFIGMAPS.items():
        for file, text in data.items():
            if not file.endswith((".yaml", ".yml")):
                continue
            sections = set(yaml.safe_load(text) or {})
            unused = sections - used.get(name, set()) - UNUSED_SECTIONS_ALLOWED
            assert not unused, f"ConfigMap {name} {file}: sections {sorted(unused)} are read by no container"


# ---- compose --------------------------------------------------------------------------------

COMPOSE_SERVICES = sorted(COMPOSE_DOC["services"].items())


def _compose_commands(svc: dict[str, Any]) -> list[list[str]]:
    """The commands a compose service runs: its `sh -c` script split at &&, or entrypoint + command."""
    entrypoint, command = svc.get("entrypoint"), svc.get("command")
    if isinstance(command, str):
        command = shlex.split(command)
    if entrypoint and entrypoint[:2] == ["sh", "-c"]:
        script = command[0] if command else ""
        out = []
        for part in script.split("&&"):
            argv = shlex.split(part)
            out.append(argv[1:] if argv[:1] == ["exec"] else argv)
        return out
    return [_full_argv(svc["image"], entrypoint, command)]


@pytest.mark.parametrize(("name", "svc"), COMPOSE_SERVICES, ids=[n for n, _ in COMPOSE_SERVICES])
def test_compose_image_is_built_here_or_known(name: str, svc: dict[str, Any]) -> None:
    image = svc["image"]
    _assert_known_image(image, f"compose {name}")
    if "build" in svc:
        b = svc["build"]
        assert (COMPOSE.parent / b["context"] / b["dockerfile"]).resolve() == DOCKERFILE, \
            f"compose {name}: builds {b['dockerfile']}"
        assert image == f"shoal/{b['target']}:dev", f"compose {name}: target {b['target']} tagged {image}"


SHOAL_COMPOSE_SERVICES = [(n, s) for n, s in COMPOSE_SERVICES if s["image"].startswith("shoal/")]


@pytest.mark.parametrize(("name", "svc"), SHOAL_COMPOSE_SERVICES, ids=[n for n, _ in SHOAL_COMPOSE_SERVICES])
def test_compose_service_flags_parse(name: str, svc: dict[str, Any], monkeypatch: pytest.MonkeyPatch,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    commands = _compose_commands(svc)
    runs = [found for argv in commands if (found := _service_argv(argv))]
    assert len(runs) == 1, f"compose {name}: runs {commands}"
    module, sargv = runs[0]
    target = SHOAL_IMAGE.match(svc["image"])
    assert target and module == f"services.{target['target']}", f"compose {name}: {svc['image']} runs {module}"
    _clean_env(monkeypatch, svc.get("environment") or {})
    parsed = _parse(module, sargv, f"compose {name}", monkeypatch, capsys)
    _assert_exact_flags([t.split("=", 1)[0] for t in sargv if t.startswith("--")], parsed, f"compose {name}", module)
    cfg = parsed.config
    assert cfg.common.system_port == SYSTEM_PORT, f"compose {name}: the healthcheck calls port {SYSTEM_PORT}"
    if getattr(cfg, "model_path", "") and svc.get("entrypoint"):
        made = [ns for argv in commands if (ns := _make_tiny(argv)) is not None]
        assert [PurePosixPath(ns.dir) for ns in made] == [PurePosixPath(cfg.model_path)], \
            f"compose {name}: model-path {cfg.model_path} is not the one make-tiny makes"
        for kind, needed in _needs(module, cfg).items():
            assert getattr(made[0], kind) == needed, f"compose {name}: make-tiny --{kind} should be {needed}"
    if "stop_grace_period" in svc and hasattr(cfg, "drain_grace"):
        grace = float(str(svc["stop_grace_period"]).removesuffix("s"))
        assert grace > cfg.drain_grace, f"compose {name}: stop_grace_period {grace} <= drain grace"


def test_compose_depends_on_known_services() -> None:
    names = set(COMPOSE_DOC["services"])
    for name, svc in COMPOSE_SERVICES:
        deps = svc.get("depends_on") or {}
        assert set(deps) <= names, f"compose {name}: depends on {sorted(set(deps) - names)}"


def _iter_images() -> Iterator[str]:
    yield from (c.spec["image"] for c in CONTAINERS)
    yield from (s["image"] for _, s in COMPOSE_SERVICES)


def test_checks_see_the_services() -> None:
    """The walk above found what it should (a broken walk would make every test vacuous)."""
    modules = set()
    for c in SERVICE_CONTAINERS:
        found = _service_argv(_full_argv(c.spec["image"], c.spec.get("command"), c.spec.get("args")))
        if found:
            modules.add(found[0])
    assert modules >= {"services.frontend", "services.decode", "services.prefill", "services.router",
                       "services.embedding", "services.diffusion", "services.encode", "services.processor"}
    assert "nats:2.11-alpine" in set(_iter_images())
