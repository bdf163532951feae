#!/usr/bin/env bash
# Background job: centralized LFW-disjoint training for several seeds (the headline baseline rows).
# usage: scripts/recipes/lfw_seeds.sh <protect> <epochs> <seeds...> [-- extra overrides]
set -euo pipefail
cd "$(dirname "$0")/../.."
protect=$1; epochs=$2; shift 2
seeds=(); while [ $# -gt 0 ] && [ "$1" != "--" ]; do seeds+=("$1"); shift; done
[ "${1:-}" = "--" ] && shift
for s in "${seeds[@]}"; do
  .venv/bin/fedface train data=lfwa protect="$protect" train.epochs="$epochs" seed="$s" run.progress=false \
    run.dir="results/lfw-$protect-e$epochs-s$s" "$@"
done
