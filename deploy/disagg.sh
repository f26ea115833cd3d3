#!/usr/bin/env bash
# A disaggregated cluster on loopback: nats-server + 1 prefill + 1 decode worker + frontend.
#
#   deploy/disagg.sh [MODEL_DIR]          # default: .shoal/models/tiny (made if missing)
#
# The frontend (http://127.0.0.1:${HTTP_PORT:-8000}) routes to the decode worker; the decode worker
# sends each prompt to the prefill worker, which writes the KV into the decode worker's cache over
# NIXL (see docs/DISAGGREGATION.md). Ctrl-C (or SIGTERM) stops everything this script started, by PID.
# Environment: HTTP_PORT, NATS_PORT, NAMESPACE, ENGINE_ARGS (extra flags for both workers),
# DECODE_ARGS (e.g. --disagg-fallback-local), PYTHON.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
MODEL=${1:-.shoal/models/tiny}
HTTP_PORT=${HTTP_PORT:-8000}
NATS_PORT=${NATS_PORT:-4222}
NS=${NAMESPACE:-shoal}
STATE=.shoal/disagg
mkdir -p "$STATE/logs" "$STATE/nats"
[ -f "$MODEL/config.json" ] || "$PY" -m shared.cli model make-tiny "$MODEL"

PIDS=()
stop_all() {
  trap - INT TERM EXIT
  for ((i=${#PIDS[@]}-1; i>=0; i--)); do kill -TERM "${PIDS[i]}" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap stop_all INT TERM EXIT

nats-server -a 127.0.0.1 -p "$NATS_PORT" -js -sd "$STATE/nats" > "$STATE/logs/nats.log" 2>&1 &
PIDS+=($!)
sleep 0.5
COMMON=(--nats-url "nats://127.0.0.1:$NATS_PORT" --namespace "$NS")
# shellcheck disable=SC2086
"$PY" -m services.prefill "${COMMON[@]}" --model-path "$MODEL" --system-port 9101 ${ENGINE_ARGS:-} \
  > "$STATE/logs/prefill.log" 2>&1 &
PIDS+=($!)
# shellcheck disable=SC2086
"$PY" -m services.decode "${COMMON[@]}" --model-path "$MODEL" --disaggregation-mode decode --system-port 9102 \
  ${ENGINE_ARGS:-} ${DECODE_ARGS:-} > "$STATE/logs/decode.log" 2>&1 &
PIDS+=($!)
"$PY" -m services.frontend "${COMMON[@]}" --http-port "$HTTP_PORT" --system-port 9100 \
  > "$STATE/logs/frontend.log" 2>&1 &
PIDS+=($!)

for port in 9101 9102 9100; do
  until curl -sf "http://127.0.0.1:$port/ready" > /dev/null; do
    sleep 0.5
    for pid in "${PIDS[@]}"; do kill -0 "$pid" 2>/dev/null || { echo "a process exited; see $STATE/logs"; exit 1; }; done
  done
done
echo "shoal (disaggregated) is up: http://127.0.0.1:$HTTP_PORT  (logs in $STATE/logs; Ctrl-C stops it)"
echo "  curl http://127.0.0.1:$HTTP_PORT/v1/completions -H 'Content-Type: application/json' \\"
echo "    -d '{\"model\":\"$(basename "$MODEL")\",\"prompt\":\"Hello\",\"max_tokens\":16}'"
wait
