"""lm-evaluation-harness's `local-completions` against shoal equals its `hf` model on the same weights.

    python -m tests.bench.check_lm_eval [--record docs/bench/lm_eval_check.jsonl]

Makes the tiny model and a small local log-likelihood task (a JSONL file and a task YAML, no hub), starts
nats-server, a reference-engine worker and the frontend, then runs the task twice with lm-eval's own
`simple_evaluate`: `local-completions` (echo + logprobs on /v1/completions, token ids sent as prompts) and
`hf` (transformers on CPU, float32). Every sample's log-likelihood must agree within 1e-4 and its
is-greedy flag exactly (the last sample's continuation is the model's own greedy output, so one flag is
true); exits 1 otherwise. Needs `pip install lm-eval` (not a runtime dependency).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

DOCS = [  # (context, continuation): byte-level tiny model, so any text tokenizes
    ("The capital of France is", " Paris"), ("One, two, three,", " four"), ("Hello", " world!"),
    ("def add(a, b):", " return a + b"), ("Cats like", " fish"), ("Zebra stripes are", " black and white"),
]
TASK = """task: shoal_tiny_loglikelihood
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: loglikelihood
doc_to_text: "{{{{context}}}}"
doc_to_target: "{{{{continuation}}}}"
metric_list:
  - metric: perplexity
    aggregation: perplexity
    higher_is_better: false
  - metric: acc
    aggregation: mean
    higher_is_better: true
"""
TOLERANCE = 1e-4


def greedy_doc(model: Path, n: int = 3) -> tuple[str, str]:
    """A (context, continuation) whose continuation is the model's own greedy output (is_greedy is true):
    the first context (of a few) whose greedy next tokens are printable ASCII bytes (the tiny model is
    random: its greedy bytes often are not, and those would not survive text)."""
    import string

    import torch
    from transformers import AutoModelForCausalLM

    from shared.tokenizer import Tokenizer

    tok = Tokenizer.from_dir(model)
    hf = AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32).eval()
    printable = {tok.encode(c)[0] for c in string.ascii_letters + string.digits + " .,"}
    for context in (f"Say {w}:" for w in string.ascii_lowercase + string.digits):
        ids = tok.encode(context)
        for _ in range(n):
            with torch.no_grad():
                nxt = int(hf(torch.tensor([ids])).logits[0, -1].argmax())
            if nxt not in printable:
                break
            ids.append(nxt)
        if len(ids) > len(tok.encode(context)):
            return context, tok.decode(ids)[len(context):]
    raise RuntimeError("no context with a printable greedy continuation")


def write_task(root: Path, docs: list[tuple[str, str]]) -> Path:
    data = root / "data.jsonl"
    data.write_text("".join(json.dumps({"context": c, "continuation": t}) + "\n" for c, t in docs))
    tasks = root / "tasks"
    tasks.mkdir()
    (tasks / "shoal_tiny.yaml").write_text(TASK.format(data=data))
    return tasks


def evaluate(model: str, model_args: str, tasks: Path) -> list[tuple[float, bool]]:
    import lm_eval
    from lm_eval.tasks import TaskManager

    out: Any = lm_eval.simple_evaluate(model=model, model_args=model_args, tasks=["shoal_tiny_loglikelihood"],
                                       task_manager=TaskManager(include_path=str(tasks)), log_samples=True,
                                       batch_size=1, device="cpu")
    samples = sorted(out["samples"]["shoal_tiny_loglikelihood"], key=lambda s: s["doc_id"])
    return [(float(s["resps"][0][0][0]), bool(s["resps"][0][0][1])) for s in samples]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--record", type=Path, default=None, help="append the raw result (JSON line) to this file")
    a = ap.parse_args(argv)
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from shared.model.tiny import make_tiny
    from tests.bench.local_cluster import bench_cluster

    with tempfile.TemporaryDirectory(prefix="shoal-lm-eval-") as tmp:
        root = Path(tmp)
        model = make_tiny(root / "tiny")
        docs = [*DOCS, greedy_doc(model)]
        tasks = write_task(root, docs)
        hf = evaluate("hf", f"pretrained={model},dtype=float32", tasks)
        with bench_cluster(root, model, ["--engine", "reference"], namespace="lmeval") as cluster:
            ours = evaluate("local-completions", f"model=tiny,base_url={cluster.url}/v1/completions,"
                            f"tokenizer={model},tokenizer_backend=huggingface,num_concurrent=1,max_retries=1,"
                            "tokenized_requests=True", tasks)
    worst = max(abs(x[0] - y[0]) for x, y in zip(ours, hf, strict=True))
    greedy_same = [x[1] for x in ours] == [y[1] for y in hf]
    ok = len(ours) == len(hf) == len(DOCS) + 1 and worst <= TOLERANCE and greedy_same and hf[-1][1]
    for (lo, go), (lh, gh) in zip(ours, hf, strict=True):
        print(f"local-completions {lo:12.6f} {go!s:5}   hf {lh:12.6f} {gh!s:5}   |diff| {abs(lo - lh):.2e}")
    print(f"{'PASS' if ok else 'FAIL'}: max |diff| {worst:.2e} (tolerance {TOLERANCE}), is_greedy equal: {greedy_same}")
    if a.record is not None:
        import lm_eval

        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
        row = {"check": "lm_eval_local_completions_vs_hf", "passed": ok, "max_abs_diff": worst,
               "is_greedy_equal": greedy_same, "samples": len(ours), "local_completions": ours, "hf": hf,
               "lm_eval": lm_eval.__version__, "commit": commit,
               "machine": f"{platform.node()} {platform.machine()} {os.cpu_count()} cpus",
               "command": " ".join(["python -m tests.bench.check_lm_eval", *(argv or sys.argv[1:])]),
               "when": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")}
        with a.record.open("a") as f:
            f.write(json.dumps(row) + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
