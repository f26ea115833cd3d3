"""The clustered NATS of the deploy files: three JetStream nodes routed to each other, and every
shoal service given all three URLs (compose's deploy/compose.nats-cluster.yaml, the k8s base).

Read as YAML, no processes: tests/integration/test_nats_cluster.py runs a cluster for real.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from shared.config.args import NatsOptions

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
COMPOSE = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
CLUSTER = yaml.safe_load((DEPLOY / "compose.nats-cluster.yaml").read_text())
K8S_NATS = list(yaml.safe_load_all((DEPLOY / "k8s" / "nats.yaml").read_text()))


def _opt(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


def _hosts(urls: str, port: int) -> set[str]:
    parts = [urlsplit(u) for u in urls.split(",")]
    assert {p.port for p in parts} == {port}, urls
    return {p.hostname for p in parts}


def _node(argv: list[str]) -> dict[str, Any]:
    assert "-js" in argv and "-sd" in argv, argv
    return {"name": _opt(argv, "--server_name"), "cluster": _opt(argv, "--cluster_name"),
            "routes": _hosts(_opt(argv, "--routes"), 6222), "data": _opt(argv, "-sd")}


def test_compose_cluster_has_three_nodes_each_routed_to_the_other_two() -> None:
    services = CLUSTER["services"]
    nodes = {n: _node(services[n]["command"]) for n in ("nats", "nats-1", "nats-2")}
    assert len({n["name"] for n in nodes.values()}) == 3
    assert {n["cluster"] for n in nodes.values()} == {"shoal"}
    for name, node in nodes.items():
        assert node["routes"] == set(nodes) - {name}, name
    volumes = [COMPOSE["services"]["nats"]["volumes"][0]] + [services[n]["volumes"][0] for n in ("nats-1", "nats-2")]
    assert len({v.split(":")[0] for v in volumes}) == 3, volumes  # each node its own JetStream store
    assert {v.split(":")[0] for v in volumes[1:]} <= set(CLUSTER["volumes"])


def test_compose_cluster_gives_every_shoal_service_all_three_urls() -> None:
    shoal = {n for n, s in COMPOSE["services"].items() if "NATS_URL" in (s.get("environment") or {})}
    assert shoal >= {"worker", "frontend"}
    overridden = {n for n, s in CLUSTER["services"].items() if "environment" in s}
    assert overridden == shoal  # no service left on one node, none invented
    for name in shoal:
        url = CLUSTER["services"][name]["environment"]["NATS_URL"]
        assert len(NatsOptions(url=url).urls) == 3
        assert _hosts(url, 4222) == {"nats", "nats-1", "nats-2"}, name


def test_k8s_nats_is_a_three_pod_statefulset_with_a_headless_service() -> None:
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for doc in K8S_NATS:
        by_kind.setdefault(doc["kind"], []).append(doc)
    (sts,) = by_kind["StatefulSet"]
    spec = sts["spec"]
    assert spec["replicas"] == 3
    assert spec["podManagementPolicy"] == "Parallel"  # no pod is ready before a quorum exists
    headless = [s for s in by_kind["Service"] if s["metadata"]["name"] == spec["serviceName"]]
    assert headless and headless[0]["spec"]["clusterIP"] == "None"
    (c,) = spec["template"]["spec"]["containers"]
    node = _node(c["args"])
    assert node["name"] == "$(POD_NAME)" and any(e["name"] == "POD_NAME" for e in c["env"])
    pods = {f"nats-{i}.{spec['serviceName']}" for i in range(spec["replicas"])}
    assert node["routes"] == pods
    mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
    assert mounts[spec["volumeClaimTemplates"][0]["metadata"]["name"]] == node["data"]  # JetStream on the volume
    (pdb,) = by_kind["PodDisruptionBudget"]
    assert pdb["spec"]["maxUnavailable"] == 1

    config = next(yaml.safe_load_all((DEPLOY / "k8s" / "config.yaml").read_text()))
    common = yaml.safe_load(config["data"]["cfg.yaml"])["common"]
    assert _hosts(common["nats-url"], 4222) == pods  # every service knows every pod
