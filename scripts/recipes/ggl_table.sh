#!/bin/bash
# Malicious server I at its strongest here: generative gradient leakage (GGL, attack.gradient.prior=pca) vs the
# free-input attack (InvertingGradients), on one attacked reply of an ORL client: batch 4 (or 8), ONE local step,
# shared head, from the initial model (round 1) or a pre-trained one (federation.pretrain.epochs=20 on 6 public
# identities). Threats: the plain server and knows_labels. Scores: pixel PSNR / SSIM vs the mean-face floor, dlib COS /
# top-1 and SRRA of the recovered faces (fedface summarize's attack table). docs/attacks.md "Generative gradient
# leakage" reads this table.
# Rows -net: the default fedface_net trunk; -epoch: a full local epoch instead of one step; -group: GroupNorm instead of
# BatchNorm (each face normalised on its own, as BN in eval mode would: no batch statistics couple the faces of the
# batch; the norm DP-SGD clients run); none-gan: the DCGAN prior,
# trained first by `fedface prior data=orl attack.gradient.prior=gan attack.cache=results/priors` (~20 min here);
# lfw-none-pca: LFW-disjoint (data=lfwa, 10 public identities for the pre-training; ~12 min here); lfw-none-pca-pub60:
# a trunk the server pre-trained into a usable face model (60 public identities, 30 epochs: LFW 79.7 %; ~15 min here).
# usage: scripts/recipes/ggl_table.sh [row ...]   results in results/ggl-orl/<row>/; rows finished at the same config are kept (run.reuse).
set -euo pipefail
cd "$(dirname "$0")/../.."
declare -A ROWS=(
  [none-free-init]="protect=none mixup=none attack.gradient.prior=free"
  [none-pca-init]="protect=none mixup=none attack.gradient.prior=pca"
  [none-free]="protect=none mixup=none attack.gradient.prior=free federation.pretrain.epochs=20"
  [none-pca]="protect=none mixup=none attack.gradient.prior=pca federation.pretrain.epochs=20"
  [none-pca-b8]="protect=none mixup=none attack.gradient.prior=pca federation.pretrain.epochs=20 train.batch_size=8"
  [ppfr_fd+adamixup-pca]="protect=ppfr_fd mixup=adaptive mixup.k_max=4 attack.gradient.prior=pca federation.pretrain.epochs=20"
  [none-pca-net]="protect=none mixup=none attack.gradient.prior=pca federation.pretrain.epochs=20 model=fedface_net"
  [none-pca-epoch]="protect=none mixup=none attack.gradient.prior=pca federation.pretrain.epochs=20 federation.local_steps=null"
  [none-pca-group]="protect=none mixup=none attack.gradient.prior=pca federation.pretrain.epochs=20 model.norm=group"
  [none-gan]="protect=none mixup=none attack.gradient.prior=gan attack.cache=results/priors federation.pretrain.epochs=20"
  [lfw-none-pca]="data=lfwa data.split.public_identities=10 protect=none mixup=none attack.gradient.prior=pca federation.pretrain.epochs=20"
  [lfw-none-pca-pub60]="data=lfwa data.split.public_identities=60 protect=none mixup=none attack.gradient.prior=pca federation.pretrain.epochs=30"
)
ORDER=(none-free-init none-pca-init none-free none-pca none-pca-b8 ppfr_fd+adamixup-pca none-pca-net none-pca-epoch none-pca-group none-gan
       lfw-none-pca lfw-none-pca-pub60)
COMMON=(data=orl model=tiny threads=2 run.progress=false federation.num_clients=2 federation.rounds=1
        federation.local_steps=1 federation.head=shared train.batch_size=4 data.split.public_identities=6
        attack=gradient attack.max_clients=1 "attack.threats=[{}, {knows_labels: true}]"
        attack.gradient.iterations=1000 attack.gradient.max_seconds=120 attack.gradient.components=128)
rows=("$@")
[ ${#rows[@]} -eq 0 ] && rows=("${ORDER[@]}")
for row in "${rows[@]}"; do
  out=results/ggl-orl/$row
  # shellcheck disable=SC2086
  .venv/bin/fedface simulate "${COMMON[@]}" ${ROWS[$row]} run.dir="$out" run.reuse=true
done
.venv/bin/fedface summarize results/ggl-orl/*
