# Shared by deploy/agg.sh and deploy/disagg.sh (sourced, not run): settings, nats-server, readiness,
# and stopping exactly the processes the script started, by PID, newest first.
# Needs STATE set by the caller; reads PYTHON, HTTP_PORT, NATS_PORT, NATS_CLUSTER, NAMESPACE, OTLP_ENDPOINT.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

PY=${PYTHON:-python3}
MODEL=${1:-.shoal/models/tiny}
HTTP_PORT=${HTTP_PORT:-8000}
NATS_PORT=${NATS_PORT:-4222}
NS=${NAMESPACE:-shoal}
mkdir -p "$STATE/logs" "$STATE/nats"
[ -f "$MODEL/config.json" ] || "$PY" -m shared.cli model make-tiny "$MODEL"

# Each child runs in its own session (setsid, where there is one): a Ctrl-C in the terminal then reaches
# only this script, whose trap stops the children in order, so that workers drain while NATS is still up.
DETACH=()
command -v setsid > /dev/null && DETACH=(setsid)

PIDS=()
stop_all() {
  trap - INT TERM EXIT
  for ((i=${#PIDS[@]}-1; i>=0; i--)); do
    kill -TERM "${PIDS[i]}" 2>/dev/null || true
    wait "${PIDS[i]}" 2>/dev/null || true   # one at a time: the frontend first, nats-server last
  done
}
trap stop_all INT TERM EXIT

# start_nats: one nats-server on NATS_PORT, or with NATS_CLUSTER=N (3 for a replicated JetStream) N clustered
# nodes on NATS_PORT, NATS_PORT+1, ... (routes on ROUTE_PORT (6222) and up, monitoring on MONITOR_PORT (8222)
# and up, loopback), then until each says JetStream is up (a leader elected); COMMON gets every URL.
start_nats() {
  local n=${NATS_CLUSTER:-1} route_port=${ROUTE_PORT:-6222} monitor_port=${MONITOR_PORT:-8222} urls=() i j
  for ((i=0; i<n; i++)); do
    local port=$((NATS_PORT + i)) args=(-a 127.0.0.1 -p "$((NATS_PORT + i))" -js) peers=() log=nats
    if ((n > 1)); then
      log=nats$i
      for ((j=0; j<n; j++)); do ((j == i)) || peers+=("nats://127.0.0.1:$((route_port + j))"); done
      args+=(-sd "$STATE/nats/n$i" --server_name "shoal-n$i" --cluster_name shoal -m "$((monitor_port + i))"
             --cluster "nats://127.0.0.1:$((route_port + i))" --routes "$(IFS=,; echo "${peers[*]}")")
    else
      args+=(-sd "$STATE/nats")
    fi
    ${DETACH[@]+"${DETACH[@]}"} nats-server "${args[@]}" > "$STATE/logs/$log.log" 2>&1 &
    PIDS+=($!)
    urls+=("nats://127.0.0.1:$port")
  done
  for ((i=0; i<n; i++)); do
    for _ in $(seq 50); do (echo > "/dev/tcp/127.0.0.1/$((NATS_PORT + i))") 2>/dev/null && break; sleep 0.1; done
    if ((n > 1)); then
      for _ in $(seq 200); do curl -sf "http://127.0.0.1:$((monitor_port + i))/healthz" > /dev/null && break; sleep 0.1; done
    fi
  done
  COMMON=(--nats-url "$(IFS=,; echo "${urls[*]}")" --namespace "$NS")
  if [ -n "${OTLP_ENDPOINT:-}" ]; then COMMON+=(--otlp-endpoint "$OTLP_ENDPOINT"); fi
}

# wait_ready PORT...: until each system port answers /ready; fails if any started process exits
wait_ready() {
  for port in "$@"; do
    until curl -sf "http://127.0.0.1:$port/ready" > /dev/null; do
      sleep 0.5
      for pid in "${PIDS[@]}"; do
        kill -0 "$pid" 2>/dev/null || { echo "a process exited; see $STATE/logs" >&2; exit 1; }
      done
    done
  done
}

show_usage() {
  echo "  curl http://127.0.0.1:$HTTP_PORT/v1/completions -H 'Content-Type: application/json' \\"
  echo "    -d '{\"model\":\"$(basename "$MODEL")\",\"prompt\":\"Hello\",\"max_tokens\":16}'"
}
