#!/usr/bin/env bash
# Issue 7's federated gradient-attack table: an ORL federation (8 identity-disjoint clients, head=shared, model=tiny)
# whose server attacks one client's reply per attacked round, for every protection x batch size x local steps.
# The attack: DLG (L2 matching, L-BFGS; validated by scripts/diagnostics/attack_fixture.py) through the replayed local steps,
# bounded by attack.gradient.max_seconds (a bounded attack reports its partial result). Threat variants per row:
# server (no key), knows_key (a colluding client) for keyed protections, knows_seed (upper bound) for MixUp.
# Batch sizes 4 and 8: with our trunks' embedding BatchNorm1d a batch of 1 cannot train and a batch of 2 maps every
# embedding to +-1 (the model's output, hence its gradient, barely depends on the input).
# usage: scripts/recipes/gradient_attack_table.sh [row ...]   results in results/attack-orl/<row>/; rows finished at the same config are kept (run.reuse).
set -euo pipefail
cd "$(dirname "$0")/../.."
common="data=orl model=tiny federation.num_clients=8 federation.head=shared federation.eval_every=100
        attack=gradient attack.max_clients=1 attack.gradient.method=dlg attack.gradient.optimizer=lbfgs
        attack.gradient.iterations=30 attack.gradient.max_seconds=${MAX_SECONDS:-90}"
declare -A rows
for b in 4 8; do
  kmax=$(( b < 6 ? b : 6 ))
  for s in 1 4; do
    shape="train.batch_size=$b federation.local_steps=$s federation.rounds=1"
    rows[none-b$b-s$s]="protect=none $shape attack.threats=[{}]"
    rows[fr_fd-b$b-s$s]="protect=fr_fd $shape attack.threats=[{}]"
    rows[obfuscator-b$b-s$s]="protect=obfuscator $shape attack.threats=[{}]"
    rows[ppfr_fd-b$b-s$s]="protect=ppfr_fd $shape attack.threats=[{},{knows_key:true}]"
    # round 2 too: the policy gradient is zero in round 1 (no REINFORCE baseline yet)
    rows[ppfr_fd+adamixup-b$b-s$s]="protect=ppfr_fd mixup=adaptive mixup.k_max=$kmax train.batch_size=$b
      federation.local_steps=$s federation.rounds=2 attack.max_rounds=2
      attack.threats=[{},{knows_key:true,knows_seed:true}]"
  done
done
order=()
for p in none fr_fd ppfr_fd ppfr_fd+adamixup obfuscator; do for b in 4 8; do for s in 1 4; do order+=("$p-b$b-s$s"); done; done; done
source scripts/recipes/rows.sh
run_rows simulate results/attack-orl "$common threads=1 federation.ray.num_cpus=1 run.progress=false" "$@"
