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

import shlex
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml

from shared.config.yaml_config import load_section
from tests.unit.deploy_files import (
    COMPOSE,
    COMPOSE_DOC,
    CONFIGMAPS,
    CONTAINERS,
    DOCKERFILE,
    JOB_CONTAINERS,
    K8S,
    K8S_DOCS,
    K8S_FILES,
    NATS_ROLES,
    ROUTER_DRAIN_S,
    SERVICE_CONTAINERS,
    SHOAL_IMAGE,
    SYSTEM_PORT,
    UNUSED_SECTIONS_ALLOWED,
    WORKLOAD_KINDS,
    K8sContainer,
    _assert_exact_flags,
    _assert_known_image,
    _clean_env,
    _config_text,
    _expected_role,
    _flag,
    _flag_value,
    _full_argv,
    _make_tiny,
    _needs,
    _parse,
    _rel,
    _secret_key,
    _service_argv,
)


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
    drain = ROUTER_DRAIN_S if module == "services.router" else cfg.common.drain_grace
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


def test_k8s_setup_job_provisions_as_the_setup_role(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The base provisions the buckets and streams (`shoal setup`, the only role allowed to under access
    control): its argv, with the ConfigMap's section expanded, parses as the CLI parses it, and it connects
    to the services' NATS as the setup user."""
    from shared.cli import build_parser
    from shared.config.args import common_from_args
    from shared.config.yaml_config import expand_config_argv

    jobs = [c for c in JOB_CONTAINERS if "setup" in (c.spec.get("command") or [])]
    assert len(jobs) == 1, [c.id for c in JOB_CONTAINERS]
    job = jobs[0]
    assert job.file.parent == K8S, "the setup Job belongs to the base (kubectl apply -k deploy/k8s)"
    argv = job.spec["command"]
    assert argv[:4] == ["python", "-m", "shared.cli", "setup"], argv
    config_path = _flag_value(argv, "--config")
    assert config_path
    _, text = _config_text(job, config_path)
    local = tmp_path / "cfg.yaml"
    local.write_text(text, encoding="utf-8")
    _clean_env(monkeypatch, {})
    rest = [str(local) if tok == config_path else tok for tok in argv[4:]]
    args = build_parser().parse_args(["setup", *expand_config_argv(rest)])
    common = common_from_args(args)
    frontend = load_section(str(local), "frontend")
    assert (common.nats.url, common.namespace) == (frontend["nats-url"], frontend["namespace"])
    user = _secret_key(job.spec, "NATS_USER")
    assert user is not None and user["key"] == "setup-user" and "setup" in NATS_ROLES


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
    if "stop_grace_period" in svc and hasattr(cfg, "common"):
        grace = float(str(svc["stop_grace_period"]).removesuffix("s"))
        assert grace > cfg.common.drain_grace, f"compose {name}: stop_grace_period {grace} <= drain grace"


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


def test_prometheus_scrapes_every_shoal_compose_service() -> None:
    """deploy/prometheus/prometheus.yml names each compose service that runs shoal, on the system port,
    and nothing else; compose mounts that file."""
    prom = COMPOSE.parent / "prometheus" / "prometheus.yml"
    cfg = yaml.safe_load(prom.read_text())
    targets = [t for job in cfg["scrape_configs"] for sc in job["static_configs"] for t in sc["targets"]]
    assert len(targets) == len(set(targets)), targets
    assert {t.rsplit(":", 1)[1] for t in targets} == {str(SYSTEM_PORT)}
    assert {t.rsplit(":", 1)[0] for t in targets} == {n for n, _ in SHOAL_COMPOSE_SERVICES}
    svc = COMPOSE_DOC["services"]["prometheus"]
    mounted = [v.split(":")[0] for v in svc["volumes"]]
    assert [(COMPOSE.parent / m).resolve() for m in mounted] == [prom.resolve()]
