#!/usr/bin/env bash
# Gate ablation of the Whisper DLD student (issue 12), scored on the VALIDATION set (never on test):
#   keep probability 0.5 (the paper; the shipped recipe) vs 0.75, the first attention sub-block protected
#   (never dropped: --protected A1), and whole-block gates (--gate-unit block: 4 gates B1..B4).
# Same batches, steps and seed for all; two runs at a time, one thread each; RESUME=1 continues.
# Usage: bash scripts/ablation_gates.sh [TEACHER] [CORPUS]   (EPOCHS, default 6)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
TEACHER=${1:-checkpoints/teacher}
CORPUS=${2:-corpus/whisper}
EPOCHS=${EPOCHS:-6}
OUT=${OUT:-runs/ablation_gates}
source scripts/recipe.sh
mkdir -p "$OUT" results/ablation_gates
RESUME_FLAG=$([ "${RESUME:-0}" = 1 ] && echo --resume || true)

run() {   # name, extra train args (after the shipped Whisper student recipe, so they override it)...
  local name=$1; shift
  nice -n 5 $PY -m dld_core train --recipe dld --train "$CORPUS/train.jsonl" --valid "$CORPUS/valid.jsonl" \
      --out "$OUT/$name" --teacher "$TEACHER" --epochs "$EPOCHS" --batch-seconds $BATCH_SECONDS --threads 1 \
      --quiet $WHISPER_STUDENT_ARGS $DLD_ARGS $RESUME_FLAG "$@" >> "$OUT/$name.log" 2>&1
  nice -n 5 $PY -m dld_core evaluate --checkpoint "$OUT/$name" --manifest "$CORPUS/valid.jsonl" \
      --masks 4 --seed 0 --json "results/ablation_gates/$name.json" > /dev/null
}

run keep0.5 --keep-prob 0.5 &
run keep0.75 --keep-prob 0.75
wait
run protected_A1 --keep-prob 0.5 --protected A1 &
run block_gates --keep-prob 0.5 --gate-unit block
wait
$PY -m dld_core report-ablation --results results/ablation_gates --out results/ablation_gates.md
