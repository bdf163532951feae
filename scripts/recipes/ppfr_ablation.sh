#!/usr/bin/env bash
# Which PPFR-FD step costs accuracy? ORL, same trunk/epochs/seed, steps switched on one group at a time:
#   select+norm (channels 1..35, self-normalised), + shuffle1 + mix, + shuffle2 + sort (= full ppfr_fd; with the
#   sort on, Shuffle2 changes nothing the network sees, so "sort" alone is the same row).
# usage: scripts/recipes/ppfr_ablation.sh [epochs] [extra overrides...]; results in results/orl-ppfr-ablation/<row>/
set -euo pipefail
cd "$(dirname "$0")/../.."
epochs=${1:-30}; shift || true
declare -A rows=(
  [select-norm]="protect.steps.shuffle1=false protect.steps.mix=false protect.steps.shuffle2=false protect.steps.sort=false"
  [shuffle1-mix]="protect.steps.shuffle2=false protect.steps.sort=false"
  [full]=""
)
for row in select-norm shuffle1-mix full; do
  dir="results/orl-ppfr-ablation/$row"
  # shellcheck disable=SC2086
  .venv/bin/fedface train data=orl protect=ppfr_fd ${rows[$row]} train.epochs="$epochs" run.progress=false \
    run.dir="$dir" run.reuse=true "$@"
done
.venv/bin/fedface summarize results/orl-ppfr-ablation/*
