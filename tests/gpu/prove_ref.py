"""SGLang by itself (`sglang.Engine`, in this process) for the feature proofs: greedy tokens of a list of runs.

    prove_ref.py SPEC.json OUT.json
SPEC: {"model": DIR, "flags": [SGLang flags], "runs": [{"ids": [...], "lora": null | NAME, "max_tokens": N}]}.
The runs go one at a time (a random-weight model's near-ties make greedy tokens depend on batch shape).
OUT: {"outputs": [[ids], ...], "startup_s": S}, written when all ran.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path


def main(spec_path: str, out: str) -> None:
    import sglang
    from sglang.srt.server_args import prepare_server_args

    spec = json.loads(Path(spec_path).read_text())
    t0 = time.monotonic()
    engine = sglang.Engine(server_args=prepare_server_args(["--model-path", spec["model"], *spec["flags"]]))
    started = round(time.monotonic() - t0, 1)
    try:
        outputs = []
        for run in spec["runs"]:
            kw = {"lora_path": run["lora"]} if run.get("lora") else {}
            params = {"temperature": 0, "max_new_tokens": run.get("max_tokens", 32)}
            outputs.append(list(engine.generate(input_ids=run["ids"], sampling_params=params, **kw)["output_ids"]))
    finally:
        engine.shutdown()
    Path(out).write_text(json.dumps({"outputs": outputs, "startup_s": started}))
    print(json.dumps({"step": "sglang_engine_ref", "startup_s": started, "runs": len(outputs)}), flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:3])
