#!/usr/bin/env bash
# Issue 8's learned-reconstruction table: for every protection, `fedface reconstruct` (decoder + cGAN trained on the
# attacker's LFW-a auxiliary faces, white-box inversion with the key) against the clients' training faces, scored in
# pixels and by identity (dlib COS, attack top-1, SRRA on the target system). The target systems are the
# centralized models of the protection tables (same backbone and protection, trained by `fedface train`; see README):
# TARGETS (default results) must hold them; a row without its target reports SRRA as n/a.
# usage: scripts/recipes/reconstruction_table.sh <orl|lfw> [row ...]   results in results/reconstruct-<data>/<row>/
# Generators are cached in results/decoders (the aux set is the same for ORL and LFW: the LFW rows reuse them).
set -euo pipefail
cd "$(dirname "$0")/../.."
data=${1:?usage: scripts/recipes/reconstruction_table.sh <orl|lfw> [row ...]}; shift
t=${TARGETS:-results}
declare -A rows targets
rows[none]="protect=none"
rows[fr_fd]="protect=fr_fd"
rows[ppfr_fd]="protect=ppfr_fd"
rows[ppfr_fd+adamixup]="protect=ppfr_fd mixup=adaptive mixup.k_max=5"
rows[obfuscator]="protect=obfuscator"
rows[peep]="protect=peep"
rows[instahide]="protect=instahide"
case "$data" in
  orl) config="data=orl"
       targets=([none]=$t/orl-table/none [fr_fd]=$t/orl-table/fr_fd [ppfr_fd]=$t/orl-table/ppfr_fd-native
                [ppfr_fd+adamixup]=$t/orl-mixup/adamixup-2-5 [obfuscator]=$t/orl-table/obfuscator
                [peep]=$t/orl-table/peep-eps5 [instahide]=$t/orl-table/instahide) ;;
  lfw) config="data=lfwa"
       targets=([none]=$t/lfw/none-s0 [fr_fd]=$t/lfw/fr_fd-s0 [ppfr_fd]=$t/lfw/ppfr_fd-s0
                [ppfr_fd+adamixup]=$t/lfw/ppfr_fd+adamixup-2-5-s0 [obfuscator]=$t/lfw/obfuscator-s0) ;;  # lfw_table.py
  *) echo "unknown data '$data': orl | lfw" >&2; exit 2 ;;
esac
order=(none fr_fd ppfr_fd ppfr_fd+adamixup obfuscator peep instahide)
selected=("$@"); [ ${#selected[@]} -eq 0 ] && selected=("${order[@]}")
for row in "${selected[@]}"; do
  [ -n "${rows[$row]+x}" ] || { echo "unknown row '$row': ${order[*]}" >&2; exit 2; }
  dir="results/reconstruct-$data/$row"
  target="${targets[$row]:-}"
  if [ -n "$target" ] && [ ! -d "$target" ]; then
    echo "reconstruction_table: $row: target system $target not found (SRRA will be n/a; set TARGETS)" >&2
  fi
  [ -n "$target" ] && [ -d "$target" ] || target=null
  # shellcheck disable=SC2086
  .venv/bin/fedface reconstruct $config ${rows[$row]} attack.target="$target" threads=1 run.progress=false \
    run.dir="$dir" run.reuse=true
done
