# Sourced by the recipes that run one `fedface` command per named row (bash >= 4.3).
# run_rows COMMAND OUT COMMON [ROW ...]: for each ROW (default: every key of `order`, else of `rows`) run
#   fedface COMMAND $COMMON ${rows[ROW]} run.dir=OUT/ROW run.reuse=true
# -- a folder holding its row's finished run at the same config is kept, anything else there is replaced -- then
# print `fedface summarize OUT/*`. An unknown row is one line naming the known ones, exit 2.
run_rows() {
  local command=$1 out=$2 common=$3 row
  shift 3
  local known=("${!rows[@]}")
  [ -n "${order+x}" ] && known=("${order[@]}")
  local selected=("$@")
  [ ${#selected[@]} -eq 0 ] && selected=("${known[@]}")
  for row in "${selected[@]}"; do
    [ -n "${rows[$row]+x}" ] || { echo "unknown row '$row': ${known[*]}" >&2; exit 2; }
    # shellcheck disable=SC2086
    .venv/bin/fedface "$command" $common ${rows[$row]} run.dir="$out/$row" run.reuse=true
  done
  .venv/bin/fedface summarize "$out"/*
}
