#!/usr/bin/env bash
# A short check of the CUDA paths on a machine with one NVIDIA GPU (about 4 minutes with the defaults):
#   (a) torch / CUDA versions and the device name;
#   (b) the CUDA tests (pytest -m "not slow" -k cuda; they skip without a GPU);
#   (c) `unetkit train --time-budget BUDGET` for each precision (bf16, fp16 = GradScaler path) and each
#       worker count (0 = batches in the training process, 4 = DataLoader worker processes), with steps/s;
#   (d) `unetkit predict` on 2 images with --tta flips;  (e) `unetkit evaluate`.
# Every part runs even when an earlier one failed; each part's exit code, time and figures go to
# $OUT/gpu_check.json, and its output to $OUT/logs/. Run dirs live in a temp folder (not copied to $OUT).
#
# Data: ../shared/datasets/isbi2012_em_membrane when present (and SYNTH is unset), else 40 synthetic
# 512x512 random-blob image/mask PNG pairs generated into the temp folder.
#
# Settings (environment): OUT (/tmp/gpu_out), DEVICE (cuda), BUDGET (35s per training run),
# PRECISIONS ("bf16 fp16"), WORKERS ("0 4"), PY (.venv/bin/python, else python3), SYNTH (1 = synthetic data).
# A quick run of the CPU-compatible parts: DEVICE=cpu BUDGET=10s PRECISIONS=fp32 WORKERS="0 2" benchmarks/gpu_check.sh
set -u

cd "$(dirname "$0")/.." || exit 1
OUT=${OUT:-/tmp/gpu_out}
DEVICE=${DEVICE:-cuda}
BUDGET=${BUDGET:-35s}
PRECISIONS=${PRECISIONS:-bf16 fp16}
WORKERS=${WORKERS:-0 4}
PY=${PY:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
export PYTHONPATH=src${PYTHONPATH:+:$PYTHONPATH} NO_ALBUMENTATIONS_UPDATE=1

mkdir -p "$OUT/logs"
PARTS="$OUT/parts.jsonl"
: > "$PARTS"
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

now() { date +%s.%N; }

# record NAME RC START [KEY=VALUE ...]: one JSON line per part (values parsed as numbers where they are).
record() {
    "$PY" - "$@" >> "$PARTS" <<'EOF'
import json, math, sys, time
name, rc, start, *extra = sys.argv[1:]
row = {"part": name, "ok": rc == "0", "rc": int(rc), "seconds": round(time.time() - float(start), 1)}
for item in extra:
    key, _, value = item.partition("=")
    try:
        parsed = json.loads(value)
    except ValueError:
        parsed = value
    row[key] = value if isinstance(parsed, float) and not math.isfinite(parsed) else parsed
print(json.dumps(row))
EOF
    echo "== $1: rc $2"
}

# (a) versions and device
t=$(now)
"$PY" -c "
import json, torch
cuda = torch.cuda.is_available()
info = {'torch': torch.__version__, 'cuda': torch.version.cuda, 'cudnn': torch.backends.cudnn.version(),
        'cuda_available': cuda, 'device': torch.cuda.get_device_name(0) if cuda else 'cpu',
        'bf16_supported': bool(cuda and torch.cuda.is_bf16_supported())}
print(json.dumps(info))
" > "$OUT/logs/env.json" 2> "$OUT/logs/env.err"
rc=$?
cat "$OUT/logs/env.json"
record env "$rc" "$t" "info=$(tr -d '\n' < "$OUT/logs/env.json")"

# (b) CUDA tests (a name containing "cuda"; they skip without a GPU)
t=$(now)
timeout 120 "$PY" -m pytest tests -m "not slow" -k cuda -q -p no:cacheprovider > "$OUT/logs/pytest.log" 2>&1
rc=$?
record pytest_cuda "$rc" "$t" "summary=$(tail -n 1 "$OUT/logs/pytest.log")"

# Data: the real ISBI slices, or synthetic blobs.
ISBI=${ISBI:-../shared/datasets/isbi2012_em_membrane}
if [ -z "${SYNTH:-}" ] && [ -d "$ISBI/images" ]; then
    ROOT=$(cd "$ISBI" && pwd)
    {
        echo "image,mask"
        for i in $(seq 0 23); do echo "$ROOT/images/$i.png,$ROOT/masks/$i.png"; done
    } > "$WORK/train.csv"
    {
        echo "image,mask"
        for i in $(seq 24 29); do echo "$ROOT/images/$i.png,$ROOT/masks/$i.png"; done
    } > "$WORK/test.csv"
    DATA_OPTS=(--value-map 0:1,255:0)
    PREDICT_IMAGES=("$ROOT/test_images_unlabeled/0.png" "$ROOT/test_images_unlabeled/1.png")
    DATA=isbi
else
    t=$(now)
    "$PY" - "$WORK" > "$OUT/logs/synth.log" 2>&1 <<'EOF'
import sys
from pathlib import Path
import numpy as np
from PIL import Image

root = Path(sys.argv[1])
rng = np.random.default_rng(0)
yy, xx = np.mgrid[:512, :512]
rows = {"train": ["image,mask"], "test": ["image,mask"]}
for i in range(40):
    split = "train" if i < 32 else "test"
    mask = np.zeros((512, 512), bool)
    for _ in range(rng.integers(4, 12)):
        cy, cx, r = rng.integers(0, 512), rng.integers(0, 512), rng.integers(10, 50)
        mask |= (yy - cy) ** 2 + (xx - cx) ** 2 < r**2
    image = np.clip(90 + 80 * mask + rng.normal(0, 25, mask.shape), 0, 255).astype(np.uint8)
    for kind, array in (("images", image), ("masks", mask.astype(np.uint8) * 255)):
        (root / split / kind).mkdir(parents=True, exist_ok=True)
        Image.fromarray(array).save(root / split / kind / f"{i}.png")
    rows[split].append(f"{root}/{split}/images/{i}.png,{root}/{split}/masks/{i}.png")
for split, lines in rows.items():
    (root / f"{split}.csv").write_text("\n".join(lines) + "\n")
print("40 synthetic pairs in", root)
EOF
    record synth_data "$?" "$t"
    DATA_OPTS=(--value-map 0:0,255:1)
    PREDICT_IMAGES=("$WORK/test/images/32.png" "$WORK/test/images/33.png")
    DATA=synthetic
fi

# (c) training: each precision x worker count
RUN_FOR_INFERENCE=""
budget_s=$("$PY" -c "import sys; sys.path.insert(0, 'src'); from unetkit.config import parse_duration; print(int(parse_duration('$BUDGET')))" 2>/dev/null || echo 60)
for precision in $PRECISIONS; do
    for workers in $WORKERS; do
        name="train_${precision}_w${workers}"
        run="$WORK/runs/$name"
        t=$(now)
        timeout $((budget_s + 180)) "$PY" -m unetkit.cli train "$WORK/train.csv" --out "$run" --device "$DEVICE" \
            --time-budget "$BUDGET" --set "train.precision=$precision" --set "train.workers=$workers" \
            "${DATA_OPTS[@]}" > "$OUT/logs/$name.log" 2>&1
        rc=$?
        figures=$("$PY" - "$run" <<'EOF' 2>/dev/null
import json, sys
from pathlib import Path
import yaml
run = Path(sys.argv[1])
s = json.loads((run / "state.json").read_text())["scalars"]
plan = yaml.safe_load((run / "plan.yaml").read_text())
print(f"steps={s['step']} train_seconds={s['elapsed']:.1f} steps_per_s={s['step'] / max(s['elapsed'], 1e-9):.3f} "
      f"best_val_dice={s['best']:.4f} model={plan['model']['name']} batch={plan['train']['batch_size']} "
      f"patch={'x'.join(map(str, plan['train']['patch_size']))}")
EOF
        )
        # shellcheck disable=SC2086 # figures is a list of KEY=VALUE words
        record "$name" "$rc" "$t" "precision=$precision" "workers=$workers" "data=$DATA" $figures
        cp "$run/metrics.csv" "$OUT/logs/$name.metrics.csv" 2>/dev/null
        if [ "$rc" = 0 ] && [ -z "$RUN_FOR_INFERENCE" ]; then RUN_FOR_INFERENCE=$run; fi
    done
done

# (d) predict 2 images with flip TTA, (e) evaluate, both with the first run that trained
if [ -n "$RUN_FOR_INFERENCE" ]; then
    t=$(now)
    timeout 120 "$PY" -m unetkit.cli predict "$RUN_FOR_INFERENCE" "${PREDICT_IMAGES[@]}" --out "$WORK/pred" \
        --device "$DEVICE" --tta flips > "$OUT/logs/predict.log" 2>&1
    rc=$?
    record predict "$rc" "$t" "run=$(basename "$RUN_FOR_INFERENCE")" "outputs=$(ls "$WORK/pred" 2>/dev/null | tr '\n' ' ')"

    t=$(now)
    timeout 180 "$PY" -m unetkit.cli evaluate "$RUN_FOR_INFERENCE" "$WORK/test.csv" --out "$WORK/eval" \
        --device "$DEVICE" > "$OUT/logs/evaluate.log" 2>&1
    rc=$?
    cp "$WORK/eval/summary.json" "$OUT/logs/evaluate_summary.json" 2>/dev/null
    dice=$("$PY" -c "import json; print(round(json.load(open('$WORK/eval/summary.json'))['dice'], 4))" 2>/dev/null)
    record evaluate "$rc" "$t" "run=$(basename "$RUN_FOR_INFERENCE")" "dice=${dice:-none}"
else
    t=$(now)
    record predict 1 "$t" "reason=no training run succeeded"
    record evaluate 1 "$t" "reason=no training run succeeded"
fi

"$PY" - "$PARTS" "$OUT/gpu_check.json" "$DEVICE" "$BUDGET" <<'EOF'
import json, os, sys
parts = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
report = {"device": sys.argv[3], "budget": sys.argv[4], "all_ok": all(p["ok"] for p in parts), "parts": parts}
tmp = sys.argv[2] + ".tmp"
with open(tmp, "w") as f:
    json.dump(report, f, indent=1)
os.replace(tmp, sys.argv[2])
for p in parts:
    print(f"{p['part']:<20} {'ok' if p['ok'] else 'FAILED':<7} {p['seconds']:>6.1f} s  "
          + " ".join(f"{k}={v}" for k, v in p.items() if k not in ('part', 'ok', 'rc', 'seconds', 'info')))
EOF
echo "report: $OUT/gpu_check.json"
