"""One dependency set for `shoal[sglang]`: shoal's runtime requirements, the `sglang` extra's pin, SGLang's own
requirements (deploy/gpu/sglang-<version>.requires, from its wheel's METADATA) and the GPU bundle's pins
(deploy/gpu/pack.sh) must all be satisfiable together. Offline, from metadata: a resolver's dry run needs
the network. (pyproject asked xgrammar>=0.2.9 while sglang 0.5.17 pins 0.2.1: `pip install 'shoal[sglang]'`
could not resolve, and the bundle ran the frontend on 0.2.1.)"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
LINUX_X86 = {"sys_platform": "linux", "platform_machine": "x86_64", "platform_system": "Linux",
             "python_version": "3.12", "python_full_version": "3.12.3", "implementation_name": "cpython"}


def _reqs(lines: list[str]) -> dict[str, list[Requirement]]:
    out: dict[str, list[Requirement]] = {}
    for line in lines:
        req = Requirement(line)
        if req.marker is None or req.marker.evaluate({**LINUX_X86, "extra": ""}):
            out.setdefault(canonicalize_name(req.name), []).append(req)
    return out


def _together(reqs: list[Requirement]) -> bool:
    """Some version satisfies every specifier: tried on every version any of them names."""
    candidates = {Version(s.version.rstrip(".*")) for r in reqs for s in r.specifier}
    if not candidates:
        return True
    return any(all(r.specifier.contains(v, prereleases=True) for r in reqs) for v in candidates)


def _project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def test_shoal_sglang_extra_resolves_with_sglangs_own_pins() -> None:
    project = _project()
    (pin,) = [Requirement(r) for r in project["optional-dependencies"]["sglang"] if r.startswith("sglang")]
    (version,) = [s.version for s in pin.specifier if s.operator == "=="]
    lines = [x for x in (ROOT / f"deploy/gpu/sglang-{version}.requires").read_text().splitlines()
             if x.strip() and not x.startswith("#")]
    theirs, ours = _reqs(lines), _reqs(project["dependencies"])
    clash = {name: [str(r) for r in ours[name] + theirs[name]] for name in ours.keys() & theirs.keys()
             if not _together(ours[name] + theirs[name])}
    assert not clash, f"shoal[sglang] cannot resolve: {clash}"


def test_gpu_bundle_pins_are_the_dependency_set() -> None:
    """pack.sh's NAME==VERSION wheels satisfy shoal's requirements and SGLang's."""
    project = _project()
    (pin,) = [Requirement(r) for r in project["optional-dependencies"]["sglang"] if r.startswith("sglang")]
    (version,) = [s.version for s in pin.specifier if s.operator == "=="]
    lines = [x for x in (ROOT / f"deploy/gpu/sglang-{version}.requires").read_text().splitlines()
             if x.strip() and not x.startswith("#")]
    wanted = _reqs(project["dependencies"] + lines)
    pack = (ROOT / "deploy/gpu/pack.sh").read_text()
    pins = dict(re.findall(r"\b([A-Za-z][\w.-]*)==([\w.]+)", pack))
    assert pins.get("sglang") == version
    bad = {name: ver for name, ver in pins.items()
           if not all(r.specifier.contains(ver, prereleases=True) for r in wanted.get(canonicalize_name(name), []))}
    assert not bad, f"deploy/gpu/pack.sh carries versions the dependency set excludes: {bad}"


def test_the_check_sees_a_clash() -> None:
    assert not _together([Requirement("xgrammar>=0.2.9"), Requirement("xgrammar==0.2.1")])
    assert _together([Requirement("xgrammar>=0.2.1"), Requirement("xgrammar==0.2.1")])
    assert _together([Requirement("pyzmq>=25"), Requirement("pyzmq>=25.1.2")])
