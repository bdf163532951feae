#!/usr/bin/env bash
# Malicious server III on ORL (README "Malicious server III: model inversion"): class-centre inversion of
# finished runs' weights -- centralized models (their head holds every centre, like a head=shared aggregate) for
# protect none / ppfr_fd / ppfr_fd+adamixup, and the ORL federations head=shared vs head=local -- then the
# malicious-weights (imprint) attack with and without masking. Offline on saved weights: the last global
# checkpoint is what the server holds anyway. The last rows repeat three targets with the DCGAN face prior.
# usage: scripts/recipes/inversion_table.sh [RUNS_ROOT]   (default results; outputs under results/inversion-orl/)
set -euo pipefail
cd "$(dirname "$0")/../.."
RUNS=${1:-results}
OUT=results/inversion-orl
export FLWR_TELEMETRY_ENABLED=0 FLWR_DISABLE_UPDATE_CHECK=1
common="threads=1 run.progress=false run.reuse=true"  # a row finished at the same config is kept
run() {  # name target [overrides...]
  local name=$1 target=$2; shift 2
  echo "== invert $name ($target)"; /usr/bin/time -f "$name: %e s" .venv/bin/fedface invert \
    attack.target="$target" $common run.dir=$OUT/$name "$@" | tail -n +1
}
imprint() {
  local name=$1 target=$2; shift 2
  echo "== imprint $name ($target)"; /usr/bin/time -f "$name: %e s" .venv/bin/fedface imprint \
    attack.target="$target" $common run.dir=$OUT/$name "$@"
}
run central-none "$RUNS/orl-table/none" attack.backbone_only=false
imprint imprint-none "$RUNS/orl-table/none"
imprint imprint-ppfr_fd "$RUNS/orl-table/ppfr_fd-native"
run central-ppfr_fd "$RUNS/orl-table/ppfr_fd-native" attack.backbone_only=false
run central-ppfr_fd+adamixup "$RUNS/orl-mixup/adamixup-2-6" attack.backbone_only=false
run fed-none-shared "$RUNS/fed-orl/none-shared" attack.backbone_only=false
run fed-none-local "$RUNS/fed-orl/none-local"
run fed-ppfr_fd+adamixup-shared "$RUNS/fed-orl/ppfr_fd+adamixup-shared" attack.backbone_only=false
run fed-ppfr_fd+adamixup-local "$RUNS/fed-orl/ppfr_fd+adamixup-local"
# the DCGAN prior (attack.inversion.prior=gan; trained once on the aux faces, cached in attack.cache) on the same targets
run central-none-gan "$RUNS/orl-table/none" attack.backbone_only=false attack.inversion.prior=gan
run central-ppfr_fd-gan "$RUNS/orl-table/ppfr_fd-native" attack.backbone_only=false attack.inversion.prior=gan
run fed-none-shared-gan "$RUNS/fed-orl/none-shared" attack.backbone_only=false attack.inversion.prior=gan
.venv/bin/fedface summarize $OUT/*
