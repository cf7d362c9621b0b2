#!/usr/bin/env bash
# Kill-safety tests N times in a row (default 20), seeds 0..N-1: SIGKILL of real predict / export / train processes
# at random moments (tests/reliability/_kill.py), the export trial included (it is marked slow in CI).
#   PYTHONPATH=src benchmarks/kill_loop.sh 20        # stops at the first failing seed; prints a summary line
set -euo pipefail
cd "$(dirname "$0")/.."
N="${1:-20}"
PY="${PYTHON:-python}"
export PYTHONPATH="${PYTHONPATH:-$PWD/src}" OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
start=$(date +%s)
for ((seed = 0; seed < N; seed++)); do
  echo "== kill trial seed $seed of $N"
  KILL_SEED=$seed "$PY" -m pytest -q -p no:cacheprovider -m "" tests/reliability/test_kill.py -k kill -s \
    | grep -E "^\{|passed|failed|Error" || { echo "seed $seed FAILED"; exit 1; }
done
echo "kill loop: $N of $N passed in $(( $(date +%s) - start )) s"
