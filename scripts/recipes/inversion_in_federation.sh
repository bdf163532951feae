#!/usr/bin/env bash
# Malicious server III inside the federation (README "Malicious server III", "In-federation replies"): ORL,
# 4 clients x 5 rounds, federation.head=shared, the server inverting each client's most-moved head rows with its
# returned backbone in rounds 1 and 5 (attack=inversion), for protect none / ppfr_fd / ppfr_fd+adamixup; then
# `fedface invert` on each finished run scores every recorded inversion by identity (dlib COS / same person /
# top-1, SRRA / top-1 on the final model) beside the floor and ceiling, and the heuristic's row precision from the
# clients' recorded labels. The clients' key is FEDFACE_KEY (fixed below, so the scorer has it; never sent).
# usage: scripts/recipes/inversion_in_federation.sh   (outputs under results/inversion-fed/; a run finished at
#        the same config is kept: run.reuse)
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=results/inversion-fed
export FLWR_TELEMETRY_ENABLED=0 FLWR_DISABLE_UPDATE_CHECK=1
export FEDFACE_KEY=${FEDFACE_KEY:-$(printf '5eed%.0s' {1..16})}
fed="data=orl model=tiny train.batch_size=16 federation.num_clients=4 federation.rounds=5 federation.local_steps=6
     federation.min_train_nodes=2 federation.head=shared federation.ray.num_cpus=1 threads=1 run.progress=false"
attack="attack=inversion attack.every=4 attack.max_rounds=2 attack.max_clients=4 attack.identities=4"
for row in none:"protect=none mixup=none" ppfr_fd:"protect=ppfr_fd mixup=none" \
           ppfr_fd+adamixup:"protect=ppfr_fd mixup=adaptive"; do
  name=${row%%:*}; over=${row#*:}
  /usr/bin/time -f "$name simulate: %e s" .venv/bin/fedface simulate $fed $over $attack \
    seed=0 run.dir="$OUT/runs/$name" run.reuse=true
  /usr/bin/time -f "$name invert: %e s" .venv/bin/fedface invert \
    attack.target="$OUT/runs/$name" attack.backbone_only=false threads=1 run.progress=false run.dir="$OUT/$name" \
    run.reuse=true
done
.venv/bin/fedface summarize "$OUT"/*
