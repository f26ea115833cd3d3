"""The identity of the workers a planner starts: SHOAL_WORKER_NATS_* become their NATS_*, and then the
planner's own NATS secrets are not passed on; without them the workers inherit the planner's environment."""

from __future__ import annotations

from services.planner.connectors.local import worker_env


def test_worker_identity_replaces_the_planners() -> None:
    env, drop = worker_env({"NATS_USER": "planner", "NATS_PASSWORD": "p-secret", "NATS_TOKEN": "t",
                            "SHOAL_WORKER_NATS_USER": "worker", "SHOAL_WORKER_NATS_PASSWORD": "w-secret"})
    assert env == {"NATS_USER": "worker", "NATS_PASSWORD": "w-secret"}
    assert set(drop) == {"NATS_CREDS", "NATS_TOKEN", "NATS_NKEY_SEED"}  # the planner's token is not inherited


def test_without_a_worker_identity_the_environment_is_inherited() -> None:
    assert worker_env({"NATS_USER": "shared", "NATS_PASSWORD": "s"}) == ({}, ())
