#!/usr/bin/env bash
# Centralized verification table on ORL for every protection: same trunk (fedface_net), epochs and seed.
# usage: scripts/recipes/orl_protect_table.sh [epochs] [extra overrides...]; results in results/orl-table/<row>/
set -euo pipefail
cd "$(dirname "$0")/../.."
epochs=${1:-30}; shift || true
declare -A rows=(
  [none]="protect=none"
  [fr_fd]="protect=fr_fd"
  [ppfr_fd-upsample]="protect=ppfr_fd model.stem=freq_upsample"
  [ppfr_fd-native]="protect=ppfr_fd"
  [ppfr_fd-norm_channel]="protect=ppfr_fd protect.norm=channel"
  [ppfr_fd-analysis]="protect=ppfr_analysis"
  [obfuscator]="protect=obfuscator"
  [obfuscator-14px]="protect=obfuscator protect.upscale=1 protect.bias=2"
  [peep-eps3]="protect=peep protect.epsilon=3"
  [peep-eps5]="protect=peep protect.epsilon=5"
  [instahide]="protect=instahide"
  [noise]="protect=noise"
)
for row in none fr_fd ppfr_fd-native ppfr_fd-norm_channel ppfr_fd-upsample ppfr_fd-analysis obfuscator obfuscator-14px peep-eps3 peep-eps5 instahide noise; do
  dir="results/orl-table/$row"
  # shellcheck disable=SC2086
  .venv/bin/fedface train data=orl ${rows[$row]} train.epochs="$epochs" run.progress=false run.dir="$dir" run.reuse=true "$@"
done
.venv/bin/fedface summarize results/orl-table/*
