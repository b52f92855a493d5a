#!/usr/bin/env bash
# Steps per hour of a Whisper student on this machine, two ways (issue 20): one training using both cores
# (--threads 2) vs two trainings side by side (--threads 1 each), LD (no teacher pass, like DLD after epoch 1). Each run trains until its log shows
# step 25, then is stopped; the rate is measured between logged steps 5 and 25 (the same batches each way).
# Usage: bash scripts/throughput.sh [TEACHER] [CORPUS]   -> prints steps/hour both ways
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
TEACHER=${1:-checkpoints/teacher}
CORPUS=${2:-corpus/whisper}
source scripts/recipe.sh
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

start() {   # name threads
  $PY -m dld_core train --recipe ld --train "$CORPUS/train.jsonl" --valid "$CORPUS/valid.jsonl" --teacher "$TEACHER" \
      --out "$TMP/$1" --batch-seconds $BATCH_SECONDS --threads "$2" --quiet --epochs 1 $WHISPER_STUDENT_ARGS \
      > "$TMP/$1.log" 2>&1 &
  echo $!
}
rate() {    # name -> steps per hour between logged steps 5 and 25
  $PY - "$TMP/$1/train_log.jsonl" <<'PY'
import json, sys
t = {e["step"]: e["time"] for e in map(json.loads, open(sys.argv[1])) if e.get("event") == "step"}
print(f"{20 * 3600 / (t[25] - t[5]):.0f}")
PY
}
wait_step() {   # name pid
  until grep -q '"step": 25,' "$TMP/$1/train_log.jsonl" 2>/dev/null; do
    kill -0 "$2" 2>/dev/null || { echo "the $1 run stopped early:"; tail -3 "$TMP/$1.log"; exit 1; }
    sleep 2
  done
}
p=$(start both 2); wait_step both "$p"; kill "$p"; wait "$p" 2>/dev/null || true
p1=$(start side1 1); p2=$(start side2 1); wait_step side1 "$p1"; wait_step side2 "$p2"
kill "$p1" "$p2"; wait 2>/dev/null || true
one=$(rate both); s1=$(rate side1); s2=$(rate side2)
echo "one training, 2 threads: $one steps/h"
echo "two trainings, 1 thread each: $s1 + $s2 = $((s1 + s2)) steps/h"
