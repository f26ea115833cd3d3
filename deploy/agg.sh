#!/usr/bin/env bash
# An aggregated cluster on loopback: nats-server + N workers + frontend (what `just up` starts).
#
#   deploy/agg.sh [MODEL_DIR]          # default: .shoal/models/tiny (made if missing)
#
# Ctrl-C (or SIGTERM) stops exactly the processes this script started, by PID, newest first
# (frontend, then workers, which drain, then nats-server).
# Environment: HTTP_PORT (8000), NATS_PORT (4222), NATS_CLUSTER (1; 3: a clustered NATS, docs/DEPLOY.md),
# SYSTEM_PORT (9100: frontend; workers 9101, ...),
# ENGINE (reference|mock), WORKERS (1), NAMESPACE (shoal), ROUTER_MODE (round-robin), STATE (.shoal/agg),
# WORKER_ARGS / FRONTEND_ARGS (extra flags), OTLP_ENDPOINT, PYTHON. NATS credentials: the usual
# NATS_USER/NATS_PASSWORD/NATS_CREDS... variables reach every service (docs/DEPLOY.md).
STATE=${STATE:-.shoal/agg}
source "$(dirname "$0")/lib.sh"
ENGINE=${ENGINE:-reference}
WORKERS=${WORKERS:-1}
SYSTEM_PORT=${SYSTEM_PORT:-9100}
start_nats

READY=()
for ((w=1; w<=WORKERS; w++)); do
  port=$((SYSTEM_PORT + w))
  # shellcheck disable=SC2086
  ${DETACH[@]+"${DETACH[@]}"} "$PY" -m services.decode "${COMMON[@]}" --engine "$ENGINE" --model-path "$MODEL" --system-port "$port" \
    ${WORKER_ARGS:-} > "$STATE/logs/worker$w.log" 2>&1 &
  PIDS+=($!)
  READY+=("$port")
done
# shellcheck disable=SC2086
${DETACH[@]+"${DETACH[@]}"} "$PY" -m services.frontend "${COMMON[@]}" --http-port "$HTTP_PORT" --system-port "$SYSTEM_PORT" \
  --router-mode "${ROUTER_MODE:-round-robin}" ${FRONTEND_ARGS:-} > "$STATE/logs/frontend.log" 2>&1 &
PIDS+=($!)
READY+=("$SYSTEM_PORT")

wait_ready "${READY[@]}"
echo "shoal is up: http://127.0.0.1:$HTTP_PORT  ($WORKERS $ENGINE worker(s); logs in $STATE/logs; Ctrl-C stops it)"
show_usage
wait
