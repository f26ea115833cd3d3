"""Conditional disaggregation on real processes (nats-server, prefill, decode, aggregated worker, frontend):
prompts with few uncached tokens are prefilled on the decode worker, long ones remotely, and every one's
token ids equal aggregated serving's on the reference engine."""

from __future__ import annotations

import random

from tests.integration.test_disagg import complete, decode_worker, health, prefill_worker, ready, wait_idle
from tests.metrics import metric
from tests.tap import TokenTap

LOCAL_UNDER = 48  # --disagg-local-prefill-tokens


def test_short_or_cached_prompts_prefill_locally_with_the_aggregated_tokens(cluster):
    prefill = prefill_worker(cluster)
    decode = decode_worker(cluster, "--page-size", "16", "--disagg-local-prefill-tokens", str(LOCAL_UNDER))
    agg = cluster.worker("--page-size", "16", "--num-blocks", "4096", engine="reference", name="agg", wait=False)
    ready(cluster, prefill, decode, agg, frontend_args=("--router-mode", "direct"))
    rng = random.Random(23)
    short = [[rng.randrange(3, 256) for _ in range(rng.randrange(3, LOCAL_UNDER))] for _ in range(4)]
    long = [[rng.randrange(3, 256) for _ in range(rng.randrange(80, 160))] for _ in range(4)]
    n = 8
    d_id, a_id = health(decode)["worker_id"], health(agg)["worker_id"]
    with TokenTap(cluster.nats.url, cluster.namespace) as tap:
        def tokens(prompt: list[int], instance: str) -> list[int]:
            status, body = complete(cluster.url, cluster.model_name, prompt, n, instance)
            assert status == 200, body
            return tap.tokens(body["id"])

        for p in short + long:
            assert tokens(p, d_id) == tokens(p, a_id)
        # a long prompt whose first 144 tokens this decode worker now holds: 16 + 10 uncached, prefilled here
        warm = long[0][:144] + [rng.randrange(3, 256) for _ in range(10)] if len(long[0]) >= 144 else \
            long[0] + [rng.randrange(3, 256) for _ in range(10)]
        assert tokens(warm, d_id) == tokens(warm, a_id)
    remote = metric(decode, "shoal_disagg_prefill_path_total", path="remote", reason="uncached")
    local = metric(decode, "shoal_disagg_prefill_path_total", path="local", reason="short")
    assert (remote, local) == (len(long), len(short) + 1)
    # the short and cached prompts never reached the prefill worker: it served the long ones only
    assert metric(prefill, "shoal_endpoint_requests_total", component="prefill", endpoint="generate",
                  outcome="ok") == len(long)
    assert wait_idle(prefill, decode, agg) == [0, 0, 0]
