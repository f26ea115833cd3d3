"""AIPerf's `messages` endpoint type (Anthropic Messages, streaming) against shoal's /v1/messages.

    python -m tests.bench.bench_aiperf_messages [--aiperf PATH] [--requests 40] [--concurrency 4]
                                                [--engine reference] [--record docs/bench/aiperf_messages.jsonl]

Makes the tiny chat model offline (`shoal model make-tiny`), starts nats-server, one decode worker (reference
engine by default, or mock) and the frontend, runs `aiperf profile --endpoint-type messages --streaming`
(synthetic prompts of 64 tokens, 16 output tokens) and exits 1 unless AIPerf completes every request with no
error. AIPerf is found and run as in bench_aiperf_rerank (own venv, `--aiperf` or env AIPERF; HF_HUB_OFFLINE
cleared for it, nothing downloaded). The recorded row carries AIPerf's request latency and TTFT summaries.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from tests.bench.aiperf_common import aiperf_parser, found, record, run_aiperf, verdict


def aiperf_command(aiperf: str, url: str, model: str, tokenizer: Path, out: Path, requests: int,
                   concurrency: int) -> list[str]:
    return [aiperf, "profile", "--model", model, "--url", url, "--endpoint-type", "messages", "--streaming",
            "--tokenizer", str(tokenizer), "--request-count", str(requests), "--concurrency", str(concurrency),
            "--synthetic-input-tokens-mean", "64", "--synthetic-input-tokens-stddev", "0",
            "--output-tokens-mean", "16", "--output-tokens-stddev", "0",
            "--artifact-dir", str(out), "--ui-type", "none"]


def summary(metric: dict) -> dict:
    return {k: metric[k] for k in ("avg", "p50", "p90", "p99", "min", "max", "unit") if k in metric}


def main(argv: list[str] | None = None) -> int:
    ap = aiperf_parser(__doc__, requests=40)
    ap.add_argument("--engine", choices=["reference", "mock"], default="reference")
    a = ap.parse_args(argv)
    if not found(a.aiperf):
        return 1
    from shared.model.tiny import make_tiny
    from tests.bench.local_cluster import bench_cluster

    with tempfile.TemporaryDirectory(prefix="shoal-aiperf-") as tmp:
        root = Path(tmp)
        model = make_tiny(root / "tiny")
        with bench_cluster(root, model, ["--engine", a.engine], namespace="aipmsg") as cluster:
            cmd = aiperf_command(a.aiperf, cluster.url, model.name, model, root / "out", a.requests, a.concurrency)
            run, result = run_aiperf(cmd, root / "out")
    v = verdict(run, result, a.requests)
    latency, ttft = summary(result.get("request_latency", {})), summary(result.get("time_to_first_token", {}))
    print(f"{'PASS' if v['passed'] else 'FAIL'}: aiperf rc {run.returncode}, {v['completed']}/{a.requests} requests, "
          f"error rate {v['error_rate_pct']}%, errors {v['errors']}, latency avg {latency.get('avg', 0):.1f} ms, "
          f"TTFT avg {ttft.get('avg', 0):.1f} ms")
    if a.record is not None:
        row = {"check": "aiperf_messages_streaming", "aiperf": result.get("aiperf_version"), **v,
               "concurrency": a.concurrency, "engine": a.engine, "latency_ms": latency, "ttft_ms": ttft,
               "throughput_rps": result.get("request_throughput", {}).get("avg")}
        record(a.record, row, " ".join(["python -m tests.bench.bench_aiperf_messages", *(argv or sys.argv[1:])]))
    return 0 if v["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
