#!/usr/bin/env bash
# The main job end to end on ISBI 2012 EM membranes: check, train (defaults, 5-minute budget),
# evaluate on held-back slices, predict the unlabelled slices with overlays.
# Usage: scripts/demo.sh ISBI_DIR RUN_DIR   (`make demo` passes ../shared/datasets/isbi2012_em_membrane)
set -euo pipefail
data=$(realpath "${1:?usage: demo.sh ISBI_DIR RUN_DIR}")
run=${2:-runs/demo}
[ -d "$data/images" ] || { echo "demo: $data/images not found (ISBI 2012 folder expected)" >&2; exit 2; }
lists="$run.lists"
mkdir -p "$lists"
# Fixed split: slices 0-19 train, 20-29 test; membrane (mask value 0) is the foreground.
{ echo image,mask; for i in $(seq 0 19); do echo "$data/images/$i.png,$data/masks/$i.png"; done; } >"$lists/train.csv"
{ echo image,mask; for i in $(seq 20 29); do echo "$data/images/$i.png,$data/masks/$i.png"; done; } >"$lists/test.csv"
opts=(--value-map 0:1,255:0)

unetkit check "$lists/train.csv" "${opts[@]}"
unetkit train "$lists/train.csv" --out "$run" "${opts[@]}" --time-budget "${BUDGET:-5m}" --overwrite
unetkit evaluate "$run" "$lists/test.csv" --out "$run/eval"
unetkit predict "$run" "$data/test_images_unlabeled" --out "$run/predictions"
echo "demo done: learning curve $run/curve.png, scores $run/eval/summary.json, overlays $run/eval/worst/ and $run/predictions/"
