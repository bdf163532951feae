#!/usr/bin/env bash
# The LFW headline cells of `fedface compare` as a background job (hours on a 2-core CPU); resumable: run it again
# after a kill and only the missing cells run. When it finishes, commit the small, face-free outputs:
#   nohup scripts/recipes/compare_lfw.sh > logs/compare-lfw.log 2>&1 &
#   .venv/bin/python scripts/summaries/compare_docs.py results/lfw --name compare-lfw   # docs/results/compare-lfw.{json,md}
set -euo pipefail
cd "$(dirname "$0")/../.."
export FLWR_TELEMETRY_ENABLED=0 FLWR_DISABLE_UPDATE_CHECK=1
exec .venv/bin/fedface compare experiment=lfw "$@"
