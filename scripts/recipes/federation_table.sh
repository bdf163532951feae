#!/usr/bin/env bash
# Federation rows (issue 6's "must show"): identity-disjoint clients trained until verification accuracy plateaus
# (federation.plateau) or federation.rounds is reached; protect=none vs ppfr_fd + adaptive MixUp, head shared vs local,
# with / without public pre-training. Each row is a `fedface simulate` run (Flower + Ray, one CPU for the run).
# usage: scripts/recipes/federation_table.sh <orl|lfw> [row ...]   (no rows = all rows of that set)
#        results in results/fed-<set>/<row>/; a row whose folder holds its finished run at the same config is kept (run.reuse).
set -euo pipefail
cd "$(dirname "$0")/../.."
set_name=$1; shift
declare -A rows
if [ "$set_name" = orl ]; then
  # 30 train identities over 8 clients = 3-4 identities each; 2 local epochs per round; stop after 6 evaluations
  # without a 0.5-point gain. Pre-training: 10 of the 30 identities become the server's public split (20 epochs).
  common="data=orl federation.num_clients=8 federation.rounds=30 federation.local_epochs=2 federation.eval_every=1
          federation.plateau.patience=6 federation.plateau.min_delta=0.005"
  pre="data.split.public_identities=10 federation.pretrain.epochs=20"
  for head in local shared; do
    rows[none-$head]="protect=none federation.head=$head"
    rows[none-$head-pretrain]="protect=none federation.head=$head $pre"
    # ORL trains few steps: the policy lr is raised to 1e-2 (as in scripts/recipes/mixup_table.sh)
    rows[ppfr_fd+adamixup-$head]="protect=ppfr_fd mixup=adaptive mixup.policy_lr=0.01 federation.head=$head"
    rows[ppfr_fd+adamixup-$head-pretrain]="protect=ppfr_fd mixup=adaptive mixup.policy_lr=0.01 federation.head=$head $pre"
  done
elif [ "$set_name" = lfw ]; then
  # 158 train identities over 16 clients = 9-10 identities each; 16 rounds of 1 local epoch = the centralized
  # rows' 16 epochs; the 7,323-image evaluation runs every 2 rounds.
  common="data=lfwa federation.num_clients=16 federation.rounds=16 federation.local_epochs=1 federation.eval_every=2
          federation.plateau.patience=3 federation.plateau.min_delta=0.005"
  for head in local shared; do
    rows[none-$head]="protect=none federation.head=$head"
    rows[ppfr_fd+adamixup-$head]="protect=ppfr_fd mixup=adaptive federation.head=$head"
  done
else
  echo "unknown set '$set_name' (orl | lfw)" >&2; exit 2
fi
source scripts/recipes/rows.sh
run_rows simulate "results/fed-$set_name" "$common threads=1 federation.ray.num_cpus=1 run.progress=false" "$@"
