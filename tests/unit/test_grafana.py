"""Grafana in compose (`--profile metrics`): the committed dashboards are what deploy/grafana/build.py builds,
Grafana mounts them and the provisioning that names them, and every panel reads the provisioned Prometheus."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType

import yaml

from tests.unit.deploy_files import COMPOSE, COMPOSE_DOC

GRAFANA = COMPOSE.parent / "grafana"


def _build() -> ModuleType:
    spec = importlib.util.spec_from_file_location("grafana_build", GRAFANA / "build.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _mounts(service: dict) -> dict[str, Path]:
    """Container path -> host path, for each bind mount (read-only required)."""
    out = {}
    for v in service["volumes"]:
        host, container, mode = v.split(":")
        assert mode == "ro", v
        out[container] = (COMPOSE.parent / host).resolve()
    return out


def test_committed_dashboards_are_the_built_ones() -> None:
    build = _build()
    files = build.render()
    assert set(files) == {"overview.json", "workers.json", "routing.json"}
    assert {p.name for p in (GRAFANA / "dashboards").iterdir()} == set(files)
    assert build.main(["--check"]) == 0, "run python deploy/grafana/build.py"


def test_grafana_in_compose_mounts_dashboards_and_provisioning() -> None:
    svc = COMPOSE_DOC["services"]["grafana"]
    assert svc["profiles"] == ["metrics"] == COMPOSE_DOC["services"]["prometheus"]["profiles"]
    assert all(p.startswith("127.0.0.1:") for p in svc["ports"]), svc["ports"]
    mounts = _mounts(svc)
    assert mounts["/etc/grafana/provisioning"] == (GRAFANA / "provisioning").resolve()
    providers = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "shoal.yaml").read_text())["providers"]
    [provider] = providers
    assert mounts[provider["options"]["path"]] == (GRAFANA / "dashboards").resolve()
    home = svc["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home.startswith(provider["options"]["path"] + "/") and (GRAFANA / "dashboards" / Path(home).name).is_file()


def test_every_panel_reads_the_provisioned_prometheus() -> None:
    [source] = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "prometheus.yaml").read_text())[
        "datasources"]
    prom_port = COMPOSE_DOC["services"]["prometheus"]["ports"][0].rsplit(":", 1)[1]
    assert source["url"] == f"http://prometheus:{prom_port}"
    assert source["type"] == "prometheus" and source["uid"] == _build().DATASOURCE.uid
    for path in (GRAFANA / "dashboards").glob("*.json"):
        doc = json.loads(path.read_text())
        panels = [p for p in doc["panels"] if p["type"] != "row"]
        assert panels and len({p["id"] for p in doc["panels"]}) == len(doc["panels"]), path.name
        for p in panels:
            assert p["datasource"] == {"type": "prometheus", "uid": source["uid"]}, (path.name, p["title"])
            assert p["targets"] and all(t["expr"] for t in p["targets"]), (path.name, p["title"])
