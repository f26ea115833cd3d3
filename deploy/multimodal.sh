#!/usr/bin/env bash
# PLACEHOLDER — NOT IMPLEMENTED YET.
# deploy/multimodal.sh will launch the multimodal variant (see ../shared/DESIGN.md: processor + encode + LLM worker (E/PD, E/P/D)).
# shoal has no multimodal service yet, so this script only says so and fails.
echo "deploy/multimodal.sh: not implemented yet (shoal has no multimodal service yet)" >&2
exit 1
