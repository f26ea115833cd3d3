#!/usr/bin/env bash
# A multimodal cluster on loopback (images by URL): nats-server + the MODE's services + frontend.
#
#   deploy/multimodal.sh [MODEL_DIR]      # default: .shoal/models/tiny-vlm (made with --vision if missing)
#   MODE=epd|e-pd|e-p-d deploy/multimodal.sh
#
#   epd    one LLM worker fetches, encodes and serves (no processor, no encode worker)
#   e-pd   processor + encode worker + LLM worker (--internal); embeddings move over NIXL
#   e-p-d  processor + encode worker + prefill worker + decode worker (--internal); the prefill
#          worker reads the embeddings over NIXL, the KV goes to the decode worker over NIXL
# See docs/MULTIMODAL.md. Ctrl-C (or SIGTERM) stops everything this script started, by PID.
# Environment: MODE (epd), HTTP_PORT (8000), NATS_PORT (4222), SYSTEM_PORT (9100: frontend; the
# others 9101, ...), NAMESPACE, STATE (.shoal/multimodal), WORKER_ARGS (extra flags for LLM workers),
# ENCODE_ARGS, PROCESSOR_ARGS (e.g. "--router-mode kv"), PYTHON.
STATE=${STATE:-.shoal/multimodal}
cd "$(dirname "$0")/.."
VLM=${1:-.shoal/models/tiny-vlm}
[ -f "$VLM/config.json" ] || "${PYTHON:-python3}" -m shared.cli model make-tiny "$VLM" --vision > /dev/null
set -- "$VLM"
source deploy/lib.sh
MODE=${MODE:-epd}
SYSTEM_PORT=${SYSTEM_PORT:-9100}
case "$MODE" in epd|e-pd|e-p-d) ;; *) echo "MODE must be epd, e-pd or e-p-d, not $MODE" >&2; exit 2 ;; esac
start_nats

READY=()
next_port=$((SYSTEM_PORT + 1))
# run NAME MODULE ARGS...: start `python -m services.MODULE` with the common flags and its own system port
run() {
  local name=$1 module=$2
  shift 2
  ${DETACH[@]+"${DETACH[@]}"} "$PY" -m "services.$module" "${COMMON[@]}" --model-path "$MODEL" --system-port "$next_port" "$@" \
    > "$STATE/logs/$name.log" 2>&1 &
  PIDS+=($!)
  READY+=("$next_port")
  next_port=$((next_port + 1))
}

# shellcheck disable=SC2086
case "$MODE" in
  epd)
    run worker decode --engine reference ${WORKER_ARGS:-} ;;
  e-pd)
    run encode encode ${ENCODE_ARGS:-}
    run processor processor ${PROCESSOR_ARGS:-}
    run worker decode --engine reference --internal ${WORKER_ARGS:-} ;;
  e-p-d)
    run encode encode ${ENCODE_ARGS:-}
    run processor processor ${PROCESSOR_ARGS:-}
    run prefill prefill --engine reference ${WORKER_ARGS:-}
    run decode decode --engine reference --internal --disaggregation-mode decode ${WORKER_ARGS:-} ;;
esac
${DETACH[@]+"${DETACH[@]}"} "$PY" -m services.frontend "${COMMON[@]}" --http-port "$HTTP_PORT" --system-port "$SYSTEM_PORT" \
  > "$STATE/logs/frontend.log" 2>&1 &
PIDS+=($!)
READY+=("$SYSTEM_PORT")

wait_ready "${READY[@]}"
echo "shoal (multimodal, $MODE) is up: http://127.0.0.1:$HTTP_PORT  (logs in $STATE/logs; Ctrl-C stops it)"
echo "  curl http://127.0.0.1:$HTTP_PORT/v1/chat/completions -H 'Content-Type: application/json' -d '{\"model\":"
echo "    \"$(basename "$MODEL")\",\"max_tokens\":16,\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"text\","
echo "    \"text\":\"What is this?\"},{\"type\":\"image_url\",\"image_url\":{\"url\":\"https://.../cat.png\"}}]}]}'"
wait
