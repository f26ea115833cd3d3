"""The kubernetes connector: sets a Deployment's replicas through its scale subresource.

Unproven here (no cluster): unit-tested against a fake of the official client's `AppsV1Api`. The
`kubernetes` package is the optional extra `shoal[kubernetes]`, imported only when this connector is
chosen. Scaling down relies on the pod's SIGTERM (the worker's drain path); give the pods a
`terminationGracePeriodSeconds` longer than the workers' `--drain-grace`.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

from services.planner.observe import Pool
from shared.telemetry.logging import get_logger

log = get_logger("shoal.planner")


def deployment_name(template: str, pool: Pool) -> str:
    """`template` with {model} and {component} filled in, as a DNS-1123 name."""
    raw = template.format(model=pool.model, component=pool.component).lower()
    return re.sub(r"-+", "-", re.sub(r"[^a-z0-9-]", "-", raw)).strip("-")[:63]


def apps_api() -> Any:
    """The official client's AppsV1Api, configured in-cluster or from ~/.kube/config."""
    try:
        from kubernetes import client, config
    except ImportError as e:
        raise SystemExit("--connector kubernetes needs the kubernetes client: pip install 'shoal[kubernetes]'") from e
    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()
    return client.AppsV1Api()


class KubernetesConnector:
    def __init__(self, api: Any, namespace: str, template: str) -> None:
        self.api = api  # kubernetes.client.AppsV1Api (blocking calls: run in a thread)
        self.namespace = namespace
        self.template = template

    def pools(self) -> list[Pool]:
        return []  # a Deployment scaled to 0 by hand stays at 0

    def handles(self, pool: Pool) -> bool:
        return True

    async def scale(self, pool: Pool, actual: int, desired: int) -> int:
        name = deployment_name(self.template, pool)
        body = {"spec": {"replicas": desired}}
        await asyncio.to_thread(self.api.patch_namespaced_deployment_scale, name, self.namespace, body)
        log.info("deployment_scaled", deployment=name, namespace=self.namespace, replicas=desired, live=actual)
        return desired

    async def close(self) -> None:
        return None
