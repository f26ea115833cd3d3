#!/usr/bin/env bash
# PLACEHOLDER — NOT IMPLEMENTED YET.
# deploy/diffusion.sh will launch the diffusion variant (see ../shared/DESIGN.md: diffusion language-model worker + frontend).
# shoal has no diffusion service yet, so this script only says so and fails.
echo "deploy/diffusion.sh: not implemented yet (shoal has no diffusion service yet)" >&2
exit 1
