"""AIPerf's `cohere-rankings` endpoint type against shoal's /v2/rerank on a tiny BERT cross-encoder.

    python -m tests.bench.bench_aiperf_rerank [--aiperf PATH] [--requests 20] [--concurrency 4]
                                              [--record docs/bench/aiperf_rerank.jsonl]

Makes the tiny cross-encoder offline, starts nats-server, a score worker (reference engine) and the
frontend, runs `aiperf profile --endpoint-type cohere-rankings` (queries of 10 tokens with 5 passages of
20 tokens each: the tiny model's context is 128), and exits 1 unless AIPerf completes every request with
no error. AIPerf (`pip install aiperf`, 0.13 here) is best kept in its own virtual environment (it pins
its own transformers/pydantic); `--aiperf` names its executable (default: `aiperf` on PATH or env AIPERF).
AIPerf 0.13 cannot load a tokenizer from a local folder with HF_HUB_OFFLINE=1 set (it then resolves the
name as a hub cache snapshot), so this script clears that variable for AIPerf; nothing is downloaded: the
tokenizer is the local folder and the server is on 127.0.0.1.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from tests.bench.aiperf_common import aiperf_parser, found, record, run_aiperf, verdict


def aiperf_command(aiperf: str, url: str, model: str, tokenizer: Path, out: Path, requests: int,
                   concurrency: int) -> list[str]:
    return [aiperf, "profile", "--model", model, "--url", url, "--endpoint-type", "cohere-rankings",
            "--tokenizer", str(tokenizer), "--request-count", str(requests), "--concurrency", str(concurrency),
            "--rankings-passages-mean", "5", "--rankings-passages-stddev", "0",
            "--rankings-passages-prompt-token-mean", "20", "--rankings-passages-prompt-token-stddev", "0",
            "--rankings-query-prompt-token-mean", "10", "--rankings-query-prompt-token-stddev", "0",
            "--artifact-dir", str(out), "--ui-type", "none"]


def main(argv: list[str] | None = None) -> int:
    ap = aiperf_parser(__doc__, requests=20)
    a = ap.parse_args(argv)
    if not found(a.aiperf):
        return 1
    from shared.model.tiny_cross_encoder import make_tiny_cross_encoder
    from tests.bench.local_cluster import bench_cluster

    with tempfile.TemporaryDirectory(prefix="shoal-aiperf-") as tmp:
        root = Path(tmp)
        model = make_tiny_cross_encoder(root / "tiny-cross-encoder")
        with bench_cluster(root, model, ["--engine", "reference"], namespace="aiperf", service="score") as cluster:
            cmd = aiperf_command(a.aiperf, cluster.url, model.name, model, root / "out", a.requests, a.concurrency)
            run, result = run_aiperf(cmd, root / "out")
    v = verdict(run, result, a.requests)
    ok = v["passed"]
    latency = result.get("request_latency", {})
    print(f"{'PASS' if ok else 'FAIL'}: aiperf rc {run.returncode}, {v['completed']}/{a.requests} requests, error rate "
          f"{v['error_rate_pct']}%, errors {v['errors']}, latency avg {latency.get('avg', 0):.1f} ms "
          f"p99 {latency.get('p99', 0):.1f}")
    if a.record is not None:
        row = {"check": "aiperf_cohere_rankings", "aiperf": result.get("aiperf_version"), **v,
               "concurrency": a.concurrency, "latency_ms": latency,
               "throughput_rps": result.get("request_throughput", {}).get("avg")}
        record(a.record, row, " ".join(["python -m tests.bench.bench_aiperf_rerank", *(argv or sys.argv[1:])]))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
