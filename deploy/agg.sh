#!/usr/bin/env bash
# An aggregated cluster on loopback: nats-server + N workers + frontend (what `just up` starts).
#
#   deploy/agg.sh [MODEL_DIR]          # default: .shoal/models/tiny (made if missing)
#
# Ctrl-C (or SIGTERM) stops exactly the processes this script started, by PID, newest first
# (frontend, then workers, which drain, then nats-server).
# Environment: HTTP_PORT (8000), NATS_PORT (4222), SYSTEM_PORT (9100: frontend; workers 9101, ...),
# ENGINE (reference|mock), WORKERS (1), NAMESPACE (shoal), ROUTER_MODE (round-robin), STATE (.shoal/agg),
# WORKER_ARGS / FRONTEND_ARGS (extra flags), OTLP_ENDPOINT, PYTHON. NATS credentials: the usual
# NATS_USER/NATS_PASSWORD/NATS_CREDS... variables reach every service (docs/DEPLOY.md).
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
MODEL=${1:-.shoal/models/tiny}
HTTP_PORT=${HTTP_PORT:-8000}
NATS_PORT=${NATS_PORT:-4222}
SYSTEM_PORT=${SYSTEM_PORT:-9100}
ENGINE=${ENGINE:-reference}
WORKERS=${WORKERS:-1}
NS=${NAMESPACE:-shoal}
STATE=${STATE:-.shoal/agg}
mkdir -p "$STATE/logs" "$STATE/nats"
[ -f "$MODEL/config.json" ] || "$PY" -m shared.cli model make-tiny "$MODEL"

PIDS=()
stop_all() {
  trap - INT TERM EXIT
  for ((i=${#PIDS[@]}-1; i>=0; i--)); do
    kill -TERM "${PIDS[i]}" 2>/dev/null || true
    wait "${PIDS[i]}" 2>/dev/null || true   # one at a time: the frontend first, nats-server last
  done
}
trap stop_all INT TERM EXIT

nats-server -a 127.0.0.1 -p "$NATS_PORT" -js -sd "$STATE/nats" > "$STATE/logs/nats.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 50); do (echo > "/dev/tcp/127.0.0.1/$NATS_PORT") 2>/dev/null && break; sleep 0.1; done
COMMON=(--nats-url "nats://127.0.0.1:$NATS_PORT" --namespace "$NS")
[ -n "${OTLP_ENDPOINT:-}" ] && COMMON+=(--otlp-endpoint "$OTLP_ENDPOINT")

READY=()
for ((w=1; w<=WORKERS; w++)); do
  port=$((SYSTEM_PORT + w))
  # shellcheck disable=SC2086
  "$PY" -m services.decode "${COMMON[@]}" --engine "$ENGINE" --model-path "$MODEL" --system-port "$port" \
    ${WORKER_ARGS:-} > "$STATE/logs/worker$w.log" 2>&1 &
  PIDS+=($!)
  READY+=("$port")
done
# shellcheck disable=SC2086
"$PY" -m services.frontend "${COMMON[@]}" --http-port "$HTTP_PORT" --system-port "$SYSTEM_PORT" \
  --router-mode "${ROUTER_MODE:-round-robin}" ${FRONTEND_ARGS:-} > "$STATE/logs/frontend.log" 2>&1 &
PIDS+=($!)
READY+=("$SYSTEM_PORT")

for port in "${READY[@]}"; do
  until curl -sf "http://127.0.0.1:$port/ready" > /dev/null; do
    sleep 0.5
    for pid in "${PIDS[@]}"; do kill -0 "$pid" 2>/dev/null || { echo "a process exited; see $STATE/logs" >&2; exit 1; }; done
  done
done
echo "shoal is up: http://127.0.0.1:$HTTP_PORT  ($WORKERS $ENGINE worker(s); logs in $STATE/logs; Ctrl-C stops it)"
echo "  curl http://127.0.0.1:$HTTP_PORT/v1/completions -H 'Content-Type: application/json' \\"
echo "    -d '{\"model\":\"$(basename "$MODEL")\",\"prompt\":\"Hello\",\"max_tokens\":16}'"
wait
