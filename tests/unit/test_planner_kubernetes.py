"""The kubernetes connector against a fake AppsV1Api: it patches the scale subresource of the pool's Deployment."""

from __future__ import annotations

from typing import Any

from services.planner.connectors.kubernetes import KubernetesConnector, deployment_name
from services.planner.observe import DECODE, Pool


class FakeAppsV1Api:
    """The one call the connector makes, with the official client's signature."""

    def __init__(self) -> None:
        self.replicas: dict[tuple[str, str], int] = {("shoal", "tiny-backend"): 1}
        self.calls: list[tuple[str, str, Any]] = []

    def patch_namespaced_deployment_scale(self, name: str, namespace: str, body: Any, **kw: Any) -> dict:
        self.calls.append((name, namespace, body))
        if (namespace, name) not in self.replicas:
            raise LookupError(f"deployments.apps {name!r} not found")  # the client raises ApiException(404)
        self.replicas[(namespace, name)] = body["spec"]["replicas"]
        return {"spec": {"replicas": body["spec"]["replicas"]}}


async def test_scale_sets_replicas_through_the_scale_subresource() -> None:
    api = FakeAppsV1Api()
    k8s = KubernetesConnector(api, "shoal", "{model}-{component}")
    pool = Pool("tiny", "backend", DECODE)
    assert k8s.handles(pool)
    assert await k8s.scale(pool, actual=1, desired=3) == 3
    assert api.replicas[("shoal", "tiny-backend")] == 3
    await k8s.scale(pool, actual=3, desired=2)
    assert api.calls[-1] == ("tiny-backend", "shoal", {"spec": {"replicas": 2}})
    assert api.replicas[("shoal", "tiny-backend")] == 2


def test_deployment_names_are_dns_safe() -> None:
    assert deployment_name("{model}-{component}", Pool("Qwen/Qwen3-0.6B", "prefill")) == "qwen-qwen3-0-6b-prefill"
    assert deployment_name("shoal-{component}", Pool("m", "backend")) == "shoal-backend"
