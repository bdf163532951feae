#!/usr/bin/env bash
# Paper 001's Table 2/3 shape on ORL: PPFR-FD masking + MixUp with fixed k = 2..6 and adaptive k in {2..4}, {2..5},
# {2..6} (+ PPFR-FD alone for reference); same trunk (fedface_net), epochs and seed. Adaptive rows also print the
# average proportion of each k (Table 3).
# usage: scripts/recipes/mixup_table.sh [epochs] [extra overrides...]; results in results/orl-mixup/<row>/
set -euo pipefail
cd "$(dirname "$0")/../.."
epochs=${1:-30}; shift || true
declare -A rows=([ppfr_fd]="mixup=none")
for k in 2 3 4 5 6; do rows[mixup-k$k]="mixup=fixed mixup.k=$k"; done
# ORL trains ~120 steps: the policy lr is raised to 1e-2 so the policy can move in that budget
for k in 4 5 6; do rows[adamixup-2-$k]="mixup=adaptive mixup.k_min=2 mixup.k_max=$k mixup.policy_lr=0.01"; done
for row in ppfr_fd mixup-k2 mixup-k3 mixup-k4 mixup-k5 mixup-k6 adamixup-2-4 adamixup-2-5 adamixup-2-6; do
  dir="results/orl-mixup/$row"
  # shellcheck disable=SC2086
  .venv/bin/fedface train data=orl protect=ppfr_fd ${rows[$row]} train.epochs="$epochs" run.progress=false \
    run.dir="$dir" run.reuse=true "$@"
done
.venv/bin/fedface summarize results/orl-mixup/*
