"""Several NATS URLs and the replicas of what JetStream keeps: the flags, and how many replicas a
process picks from what the server told it."""

from __future__ import annotations

import argparse
from types import SimpleNamespace
from urllib.parse import urlparse

import pytest

from shared.config import add_common_args, common_from_args
from shared.runtime.replicas import cluster_size, replicas_for

THREE = "nats://a:4222, nats://b:4222,nats://c:4222"


def parse(*argv: str):
    p = argparse.ArgumentParser()
    add_common_args(p)
    return common_from_args(p.parse_args(list(argv))).nats


def test_nats_url_takes_a_list_from_the_flag_or_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert parse("--nats-url", THREE).urls == ["nats://a:4222", "nats://b:4222", "nats://c:4222"]
    assert parse().urls == ["nats://127.0.0.1:4222"]
    monkeypatch.setenv("NATS_URL", THREE)
    assert len(parse().urls) == 3


def test_replicas_flag_defaults_to_auto(monkeypatch: pytest.MonkeyPatch) -> None:
    assert parse().replicas == 0
    assert parse("--nats-replicas", "1").replicas == 1
    monkeypatch.setenv("SHOAL_NATS_REPLICAS", "3")
    assert parse().replicas == 3


def test_repr_hides_credentials_in_every_url() -> None:
    opts = parse("--nats-url", "nats://u:secret@a:4222,nats://v:hidden@b:4222")
    assert "secret" not in repr(opts) and "hidden" not in repr(opts)
    assert "nats://u:***@a:4222,nats://v:***@b:4222" in repr(opts)


def fake_nc(given: list[str], advertised: list[str], discovered: list[str] = ()) -> SimpleNamespace:
    pool = [urlparse(u) for u in [*given, *discovered]]
    return SimpleNamespace(_server_info={"connect_urls": advertised} if advertised else {}, servers=pool,
                           discovered_servers=[urlparse(u) for u in discovered])


@pytest.mark.parametrize(("given", "advertised", "discovered", "size"), [
    (["nats://a:4222"], [], [], 1),                                         # one server, no cluster
    (["nats://a:4222"], ["a:4222", "b:4222", "c:4222"], ["nats://b:4222", "nats://c:4222"], 3),  # learnt
    (THREE.split(","), ["a:4222"], [], 3),                                  # a node not yet routed to its peers
    (["nats://n0.svc:4222", "nats://n1.svc:4222", "nats://n2.svc:4222"],    # names given, IPs advertised
     ["10.0.0.1:4222", "10.0.0.2:4222", "10.0.0.3:4222"],
     ["nats://10.0.0.1:4222", "nats://10.0.0.2:4222", "nats://10.0.0.3:4222"], 3),
])
def test_cluster_size_from_what_the_server_said(given, advertised, discovered, size) -> None:
    assert cluster_size(fake_nc(given, advertised, discovered)) == size  # type: ignore[arg-type]


@pytest.mark.parametrize(("nodes", "wanted", "replicas"), [(1, 0, 1), (2, 0, 1), (3, 0, 3), (5, 0, 3),
                                                           (3, 1, 1), (3, 2, 2), (3, 5, 3), (1, 3, 1)])
def test_replicas_auto_is_three_on_three_nodes_and_never_more_than_the_nodes(nodes, wanted, replicas) -> None:
    nc = fake_nc(["nats://a:4222"], [f"n{i}:4222" for i in range(nodes)] if nodes > 1 else [])
    assert replicas_for(nc, wanted) == replicas  # type: ignore[arg-type]
