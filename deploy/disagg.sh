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
STATE=${STATE:-.shoal/disagg}
source "$(dirname "$0")/lib.sh"
start_nats
# shellcheck disable=SC2086
${DETACH[@]+"${DETACH[@]}"} "$PY" -m services.prefill "${COMMON[@]}" --model-path "$MODEL" --system-port 9101 ${ENGINE_ARGS:-} \
  > "$STATE/logs/prefill.log" 2>&1 &
PIDS+=($!)
# shellcheck disable=SC2086
${DETACH[@]+"${DETACH[@]}"} "$PY" -m services.decode "${COMMON[@]}" --model-path "$MODEL" --disaggregation-mode decode --system-port 9102 \
  ${ENGINE_ARGS:-} ${DECODE_ARGS:-} > "$STATE/logs/decode.log" 2>&1 &
PIDS+=($!)
${DETACH[@]+"${DETACH[@]}"} "$PY" -m services.frontend "${COMMON[@]}" --http-port "$HTTP_PORT" --system-port 9100 \
  > "$STATE/logs/frontend.log" 2>&1 &
PIDS+=($!)

wait_ready 9101 9102 9100
echo "shoal (disaggregated) is up: http://127.0.0.1:$HTTP_PORT  (logs in $STATE/logs; Ctrl-C stops it)"
show_usage
wait
