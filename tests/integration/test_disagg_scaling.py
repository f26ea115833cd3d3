"""Two prefill workers behind one decode worker; one of them killed -9 mid-run costs nothing but time."""

from __future__ import annotations

import random
import signal
from concurrent.futures import ThreadPoolExecutor

from shared.tokenizer import Tokenizer
from tests.integration.test_disagg import complete, decode_worker, hf_greedy, prefill_worker, ready, wait_idle
from tests.metrics import metric, wait_above
from tests.tap import TokenTap


def test_prefill_worker_killed_mid_run_loses_no_request(cluster, tiny_model):
    a, b = prefill_worker(cluster, name="prefill-a"), prefill_worker(cluster, name="prefill-b")
    decode = decode_worker(cluster)
    ready(cluster, a, b, decode)
    rng = random.Random(21)
    prompts = [[rng.randrange(3, 256) for _ in range(rng.randrange(200, 700))] for _ in range(24)]
    n = 6
    tok = Tokenizer.from_dir(tiny_model)
    expected = hf_greedy(tiny_model, prompts, n)

    with TokenTap(cluster.nats.url, cluster.namespace) as tap:
        with ThreadPoolExecutor(len(prompts)) as pool:
            futures = [pool.submit(complete, cluster.url, cluster.model_name, p, n) for p in prompts]
            wait_above(a, "shoal_endpoint_inflight_requests", component="prefill", endpoint="generate")
            a.signal(signal.SIGKILL)  # while it holds a request
            results = [f.result(timeout=60) for f in futures]  # never a hang
        for (status, body), want in zip(results, expected, strict=True):
            assert status == 200, body  # retried on the other prefill worker
            assert tap.tokens(body["id"]) == want
            assert body["choices"][0]["text"] == tok.decode(want)
        assert metric(decode, "shoal_disagg_prefill_failures_total") >= 1  # the kill did cost an attempt

        with ThreadPoolExecutor(8) as pool:  # the survivor serves everything from now on
            after = list(pool.map(lambda p: complete(cluster.url, cluster.model_name, p, n), prompts[:8]))
        assert [s for s, _ in after] == [200] * 8
        assert [tap.tokens(body["id"]) for _, body in after] == expected[:8]
    assert wait_idle(b, decode, timeout=8) == [0, 0]
