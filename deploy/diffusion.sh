#!/usr/bin/env bash
# A diffusion-LM cluster on loopback: nats-server + N diffusion workers + frontend.
#
#   deploy/diffusion.sh [MODEL_DIR]    # default: .shoal/models/tiny-diffusion (made with --diffusion if missing)
#
# The workers are `python -m services.diffusion` (iterative unmasking, low-confidence remasking; see
# docs/DIFFUSION.md); the frontend serves the model as any chat/completions model.
# Ctrl-C (or SIGTERM) stops exactly the processes this script started, by PID, newest first.
# Environment: HTTP_PORT (8000), NATS_PORT (4222), SYSTEM_PORT (9100: frontend; workers 9101, ...),
# ENGINE (diffusion|sglang), WORKERS (1), NAMESPACE (shoal), STATE (.shoal/diffusion),
# DLLM_BLOCK_SIZE, DLLM_STEPS, DLLM_THRESHOLD (the model's own settings when unset),
# WORKER_ARGS / FRONTEND_ARGS (extra flags; with ENGINE=sglang, SGLang's own, e.g.
# "--dllm-algorithm LowConfidence --trust-remote-code"), OTLP_ENDPOINT, PYTHON.
STATE=${STATE:-.shoal/diffusion}
cd "$(dirname "$0")/.."
set -- "${1:-.shoal/models/tiny-diffusion}"
[ -f "$1/config.json" ] || "${PYTHON:-python3}" -m shared.cli model make-tiny "$1" --diffusion > /dev/null
source deploy/lib.sh
ENGINE=${ENGINE:-diffusion}
WORKERS=${WORKERS:-1}
SYSTEM_PORT=${SYSTEM_PORT:-9100}
DLLM=()
[ -n "${DLLM_BLOCK_SIZE:-}" ] && DLLM+=(--dllm-block-size "$DLLM_BLOCK_SIZE")
[ -n "${DLLM_STEPS:-}" ] && DLLM+=(--dllm-steps "$DLLM_STEPS")
[ -n "${DLLM_THRESHOLD:-}" ] && DLLM+=(--dllm-threshold "$DLLM_THRESHOLD")
start_nats

READY=()
for ((w=1; w<=WORKERS; w++)); do
  port=$((SYSTEM_PORT + w))
  # shellcheck disable=SC2086
  ${DETACH[@]+"${DETACH[@]}"} "$PY" -m services.diffusion "${COMMON[@]}" --engine "$ENGINE" --model-path "$MODEL" --system-port "$port" \
    ${DLLM[@]+"${DLLM[@]}"} ${WORKER_ARGS:-} > "$STATE/logs/diffusion$w.log" 2>&1 &
  PIDS+=($!)
  READY+=("$port")
done
# shellcheck disable=SC2086
${DETACH[@]+"${DETACH[@]}"} "$PY" -m services.frontend "${COMMON[@]}" --http-port "$HTTP_PORT" --system-port "$SYSTEM_PORT" \
  ${FRONTEND_ARGS:-} > "$STATE/logs/frontend.log" 2>&1 &
PIDS+=($!)
READY+=("$SYSTEM_PORT")

wait_ready "${READY[@]}"
echo "shoal is up: http://127.0.0.1:$HTTP_PORT  ($WORKERS worker(s), engine $ENGINE; logs in $STATE/logs; Ctrl-C stops it)"
show_usage
wait
