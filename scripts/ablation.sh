#!/usr/bin/env bash
# DLD ablation at a reduced budget (EPOCHS each), scored on the VALIDATION set (never on test):
#   lambda in {0.5, 1, 2} (tau 1), tau in {1, 2} (lambda 1), and init from the teacher vs from scratch.
# Two runs at a time, one thread each. Usage: bash scripts/ablation.sh [TEACHER] [CORPUS]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
TEACHER=${1:-checkpoints/teacher}
CORPUS=${2:-corpus/whisper}
EPOCHS=${EPOCHS:-1}
OUT=${OUT:-runs/ablation}
source scripts/recipe.sh
BATCH=${BATCH:-$BATCH_SECONDS}
mkdir -p "$OUT" results/ablation
# the student family under study: whisper (default) or conformer (STUDENT=conformer)
STUDENT_ARGS=$([ "${STUDENT:-whisper}" = conformer ] && echo "$CONFORMER_STUDENT_ARGS" || echo "$WHISPER_STUDENT_ARGS")
ARCH="--batch-seconds $BATCH --threads 1 --quiet"

run() {   # name, extra train args...
  local name=$1; shift
  $PY -m dld_core train --recipe dld --train "$CORPUS/train.jsonl" --valid "$CORPUS/valid.jsonl" \
      --out "$OUT/$name" --teacher "$TEACHER" --epochs "$EPOCHS" $STUDENT_ARGS $ARCH "$@" \
      > "$OUT/$name.log" 2>&1
  $PY -m dld_core evaluate --checkpoint "$OUT/$name" --manifest "$CORPUS/valid.jsonl" \
      --masks 4 --seed 0 --json "results/ablation/$name.json" > /dev/null
}

run lambda1_tau1_init --init-from-teacher --lambda 1 --tau 1 &
run lambda0.5_tau1_init --init-from-teacher --lambda 0.5 --tau 1
wait
run lambda2_tau1_init --init-from-teacher --lambda 2 --tau 1 &
run lambda1_tau2_init --init-from-teacher --lambda 1 --tau 2
wait
run lambda1_tau1_scratch --no-init-from-teacher --lambda 1 --tau 1 --lr 2e-3 --warmup 200
$PY -m dld_core report-ablation --results results/ablation --out results/ablation.md
