#!/usr/bin/env bash
# The GPU proof of shoal on SGLang, run on the lent GPU machine from the repository root.
#
# Here (with PyPI):  deploy/gpu/pack.sh            -> .whl/c1 .whl/c2 .whl/c3 (<= 40 MiB each)
# There, one call per carry folder, back to back (the machine keeps /tmp while it stays warm):
#   run(carry=[".whl/c1"], "deploy/gpu/prove.sh carry 1")
#   run(carry=[".whl/c2"], "deploy/gpu/prove.sh carry 2")
#   run(carry=[".whl/c3"], "deploy/gpu/prove.sh carry 3 smoke")   # or: ... full (the last folder names the stage)
# Extra *.whl files and a jit_cache.tgz (saved in $OUT by an earlier run: Triton kernels, a minute less
# per engine on a fresh machine) put in the last carry folder are installed too.
# Environment: PROVE_CUDA_GRAPH=1 keeps SGLang's CUDA graphs; PROVE_BENCH_REPEAT=N runs (d) N times;
# PROVE_SKIP_BENCH=1 leaves (d) and SGLang's own server out; PROVE_SKIP_DISAGG=1 leaves (c) out;
# PROVE_PD_BENCH=1 runs (d)'s load through the prefill/decode pair too.
# Stages (each prints JSON lines; files land in $OUT):
#   smoke   install, make the model, (a) sglang.Engine greedy, shoal's adapter in-process (+ KV event bytes)
#   full    smoke's (a), then (b) shoal cluster over NATS, (c) prefill/decode pair over NIXL, (d) benchmark
#           shoal vs `python -m sglang.launch_server` (see tests/gpu/prove_cluster.py)
#   hicache install, make the model, HiCache flags through the worker's parser: a prompt pushed out of a
#           4,096-token GPU pool, repeated, with and without --enable-hierarchical-cache (prove_hicache.py)
#   share   install, make the model, shoal's TTFT alone vs with SGLang's own server resident on the GPU (issue 16;
#           tests/gpu/prove_share.py; SHARE_ARGS passes its flags)
#   compare install, make the model, shoal vs SGLang's own server, both resident, alternating pairs per
#           concurrency (issue 15; tests/gpu/prove_compare.py; COMPARE_ARGS passes its flags; compare.jsonl)
#   embed   install, make the model, embeddings: shoal's embedding worker on SGLang (--is-embedding) behind the
#           frontend vs transformers, then the same load against SGLang's own server (tests/gpu/prove_embed.py)
#   struct  structured output (20 JSON schemas) and tool_choice required (20) over HTTP (tests/gpu/prove_struct.py)
#   lora    two random peft adapters: shoal vs sglang.Engine greedy, load/unload under load, KV events name the
#           adapter (tests/gpu/prove_lora.py)
#   spec    n-gram speculative decoding through shoal vs SGLang without it; KV events (tests/gpu/prove_spec.py)
#   features  struct, lora and spec side by side on the one GPU;  reprove  hicache and embed side by side
# The stages from struct on write $OUT/gpu_prove_<stage>_<PROVE_COMMIT>.jsonl (each line stamped with the commit,
# the GPU, the stage and the sglang version: docs/bench/, tests/bench/gpu_tables.py) and $OUT/logs_<stage>.tgz.
set -uo pipefail
ACC=/tmp/acc
SITE=/tmp/shoal-gpu
MODEL=/tmp/shoal-model
OUT=${OUT:-/tmp/out}
mkdir -p "$ACC" "$OUT"

install_bundle() {
  [ -f "$SITE/.done" ] && return 0
  local t0=$SECONDS
  mkdir -p "$SITE/stubs/IPython" "$SITE/stubs/loguru" "$SITE/stubs/soundfile"
  cat "$ACC"/bundle.part.* | xz -d -T0 | tar x -C "$SITE" || return 1
  if ls "$ACC"/*.whl > /dev/null 2>&1; then  # wheels carried beside the bundle
    python3 -m pip install -q --no-index --no-deps --no-compile --target "$SITE/site" "$ACC"/*.whl || return 1
  fi
  # imported by SGLang (and its HTTP server) but never used for a text model
  local stub='from unittest.mock import MagicMock


def __getattr__(name):
    return MagicMock(name=name)
'
  printf '%s' "$stub" > "$SITE/stubs/IPython/__init__.py"
  printf '%s' "$stub" > "$SITE/stubs/IPython/display.py"
  printf '%s' "$stub" > "$SITE/stubs/loguru/__init__.py"
  printf '%s' "$stub" > "$SITE/stubs/soundfile/__init__.py"
  # kernels compiled by an earlier machine (triton JIT takes over a minute per fresh machine)
  [ -f "$ACC/jit_cache.tgz" ] && tar xzf "$ACC/jit_cache.tgz" -C "$HOME"
  touch "$SITE/.done"
  echo "{\"step\": \"install\", \"seconds\": $((SECONDS - t0))}"
}

setup_env() {
  export PYTHONPATH="$SITE/site-first:$SITE/site:$SITE/stubs:$PWD"
  export PATH="$SITE/site/bin:$PATH"
  export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
  export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
}

machine() {
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  python3 -c "import sglang, torch, transformers, sgl_kernel; print('sglang', sglang.__version__, 'torch',
torch.__version__, 'transformers', transformers.__version__, 'sgl_kernel', sgl_kernel.__version__)"
}

model() {
  [ -f "$MODEL/config.json" ] || python3 tests/gpu/prove.py model "$MODEL"
}

smoke() {  # (a) and the adapter start side by side; the adapter waits for (a)'s tokens before comparing
  python3 tests/gpu/prove.py reference "$MODEL" "$OUT/ref.json" > "$OUT/reference.log" 2>&1 &
  local ref=$! rc=0
  timeout 420 python3 tests/gpu/prove.py adapter "$MODEL" "$OUT" "$OUT/ref.json" > "$OUT/adapter.log" 2>&1 || rc=1
  wait $ref || rc=1
  grep '^{' "$OUT/reference.log" || tail -40 "$OUT/reference.log"
  grep '^{' "$OUT/adapter.log" || tail -60 "$OUT/adapter.log"
  return $rc
}

full() {  # (a) starts beside the cluster; the cluster's checks wait for its tokens
  python3 tests/gpu/prove.py reference "$MODEL" "$OUT/ref.json" > "$OUT/reference.log" 2>&1 &
  local ref=$! rc=0
  timeout 560 python3 tests/gpu/prove_cluster.py "$MODEL" "$OUT" "$OUT/ref.json" ${PROVE_SKIP_BENCH:+--skip-bench} \
    ${PROVE_SKIP_DISAGG:+--skip-disagg} \
    > "$OUT/cluster.log" 2>&1 || rc=1
  wait $ref || rc=1
  grep '^{' "$OUT/reference.log" || tail -40 "$OUT/reference.log"
  grep '^{' "$OUT/cluster.log"; grep -A40 'cluster_failed' "$OUT/cluster.log" | tail -120
  return $rc
}

save_jit_cache() {
  (cd "$HOME" && tar czf "$OUT/jit_cache.tgz" $(ls -d .triton .cache/flashinfer .cache/tvm-ffi 2>/dev/null)) 2>/dev/null
  ls -la "$OUT/jit_cache.tgz" 2>/dev/null
}

prepare() { install_bundle && setup_env && machine && model; }

stamp() {  # $1 stage, $2 log: its JSON lines, each stamped, -> $OUT/gpu_prove_$1_$PROVE_COMMIT.jsonl
  python3 - "$1" "$2" "$OUT/gpu_prove_$1_${PROVE_COMMIT:-unknown}.jsonl" <<'PY'
import json, shutil, subprocess, sys
from importlib.metadata import PackageNotFoundError, version
stage, log, out = sys.argv[1:4]
smi = ["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"]
gpu = subprocess.run(smi, capture_output=True, text=True).stdout.strip() if shutil.which("nvidia-smi") else ""
try:
    sglang = version("sglang")
except PackageNotFoundError:
    sglang = None
meta = {"commit": out.rsplit("_", 1)[1].removesuffix(".jsonl"), "machine": (gpu or "no GPU").splitlines()[0],
        "stage": f"prove.sh {stage}", "sglang": sglang}
lines = [json.loads(x) for x in open(log, errors="replace") if x.startswith("{")]
with open(out, "w") as f:
    for line in lines:
        f.write(json.dumps({**line, **meta}) + "\n")
PY
}

feature() {  # $1 stage, $2 script [args...]: runs it into /tmp/prove/$1, stamps its lines, packs its logs
  local name=$1 script=$2 rc=0
  shift 2
  mkdir -p "/tmp/prove/$name"
  timeout "${STAGE_TIMEOUT:-540}" python3 "$script" "$MODEL" "/tmp/prove/$name" "$@" > "/tmp/prove/$name.log" 2>&1 || rc=$?
  stamp "$name" "/tmp/prove/$name.log"
  grep '^{' "/tmp/prove/$name.log" | sed "s/^/[$name] /"
  [ $rc -ne 0 ] && tail -60 "/tmp/prove/$name.log" | sed "s/^/[$name] /"
  [ -n "${PROVE_NO_LOG_TGZ:-}" ] || tar czf "$OUT/logs_$name.tgz" -C /tmp/prove "$name.log" \
    $(cd /tmp/prove && find "$name" -name '*.log' -o -name '*items.jsonl' -o -name '*_ref.json' | head -20) 2>/dev/null
  echo "[$name] exit $rc"
  return $rc
}

together() {  # stages side by side ("name script" pairs); non-zero when any failed
  local pids=() rc=0
  for spec in "$@"; do feature $spec & pids+=($!); done
  for pid in "${pids[@]}"; do wait "$pid" || rc=1; done
  return $rc
}

# every stage exits non-zero when a check failed (the Python scripts' exit status; see prove.py exit_status)
case "${1:-}" in
  carry) cp ".whl/c$2"/* "$ACC"/ && ls -la "$ACC"; shift 2; if [ $# -gt 0 ]; then exec "$0" "$@"; fi ;;
  smoke) prepare || exit 1; smoke; rc=$?; save_jit_cache; exit $rc ;;
  hicache) prepare || exit 1
    timeout 580 python3 tests/gpu/prove_hicache.py "$MODEL" --both 2>&1 | tee "$OUT/hicache.log" | grep -v '^ '
    rc=${PIPESTATUS[0]}; save_jit_cache; exit $rc ;;
  embed) prepare || exit 1
    timeout 560 python3 tests/gpu/prove_embed.py "$MODEL" "$OUT" > "$OUT/embed.log" 2>&1; rc=$?
    grep '^{' "$OUT/embed.log"; grep -A60 'e_failed' "$OUT/embed.log" | tail -80; save_jit_cache; exit $rc ;;
  share) prepare || exit 1
    timeout 570 python3 tests/gpu/prove_share.py "$MODEL" "$OUT" ${SHARE_ARGS:-} 2>&1 | tee "$OUT/share.log" | grep '^{'
    rc=${PIPESTATUS[0]}; cat "$OUT/pools.txt"; exit $rc ;;
  compare) prepare || exit 1
    timeout 570 python3 tests/gpu/prove_compare.py "$MODEL" "$OUT" ${COMPARE_ARGS:-} 2>&1 | tee "$OUT/compare.log" | grep '^{'
    exit "${PIPESTATUS[0]}" ;;
  full) prepare || exit 1; full; rc=$?; save_jit_cache; exit $rc ;;
  struct) prepare || exit 1; feature struct tests/gpu/prove_struct.py; exit $? ;;
  lora) prepare || exit 1; feature lora tests/gpu/prove_lora.py; exit $? ;;
  spec) prepare || exit 1; feature spec tests/gpu/prove_spec.py; exit $? ;;
  features) prepare || exit 1
    together "struct tests/gpu/prove_struct.py" "lora tests/gpu/prove_lora.py" "spec tests/gpu/prove_spec.py"
    rc=$?; save_jit_cache; exit $rc ;;
  all) prepare || exit 1  # every stage of issue 25 side by side; $OUT keeps 8 files: the lines, logs.tgz, cache
    export PROVE_NO_LOG_TGZ=1
    STAGE_TIMEOUT=${STAGE_TIMEOUT:-430} together "struct tests/gpu/prove_struct.py" "lora tests/gpu/prove_lora.py" \
      "spec tests/gpu/prove_spec.py" "hicache tests/gpu/prove_hicache.py --both" "embed tests/gpu/prove_embed.py"
    rc=$?
    (cd /tmp/prove && tar czf "$OUT/logs.tgz" $(find . -name '*.log' -o -name '*items.jsonl' -o -name '*_ref.json'))
    save_jit_cache; exit $rc ;;
  reprove) prepare || exit 1
    STAGE_TIMEOUT=580 together "hicache tests/gpu/prove_hicache.py --both" "embed tests/gpu/prove_embed.py"
    exit $? ;;
  *) sed -n 2,14p "$0"; exit 2 ;;
esac
