#!/usr/bin/env bash
# Train (or continue, with RESUME=1) the four students of the shipped teacher side by side, one thread
# each, in the background-friendly way the shipped ones were made: (a) Whisper LD and DLD, (b) conformer
# LD and DLD. Logs in RUNS/<name>.log; each run checkpoints every epoch and resumes where it stopped.
# Usage: bash scripts/students.sh TEACHER CORPUS   (EPOCHS_WHISPER, EPOCHS_CONFORMER, RUNS, RESUME, FAMILIES,
#        VALID: the validation manifest, default CORPUS/valid.jsonl; MAX_STEPS: stop (and end the schedule) there)
# The shipped students: all four side by side with EPOCHS_WHISPER=4 EPOCHS_CONFORMER=5 (one session), then the
# two Whisper students alone with RESUME=1 EPOCHS_WHISPER=12 (the next session; the learning-rate schedule
# was stretched to 12 epochs at that point, so a fresh 12-epoch run is close to, not identical with, them).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
TEACHER=${1:-checkpoints/teacher}
CORPUS=${2:-corpus/whisper}
RUNS=${RUNS:-runs}
source scripts/recipe.sh
COMMON="--train $CORPUS/train.jsonl --valid ${VALID:-$CORPUS/valid.jsonl} --teacher $TEACHER --batch-seconds $BATCH_SECONDS --threads 1 --quiet"
[ "${RESUME:-0}" = 1 ] && COMMON="$COMMON --resume"
[ -n "${MAX_STEPS:-}" ] && COMMON="$COMMON --max-steps $MAX_STEPS"
FAMILIES=${FAMILIES:-whisper conformer}
mkdir -p "$RUNS"
run() {   # name, recipe, epochs, args...
  local name=$1 recipe=$2 epochs=$3; shift 3
  nice -n 5 $PY -m dld_core train --recipe "$recipe" --out "$RUNS/$name" --epochs "$epochs" $COMMON "$@" \
      >> "$RUNS/$name.log" 2>&1
}
if [[ " $FAMILIES " == *" whisper "* ]]; then
  run whisper_ld ld "${EPOCHS_WHISPER:-12}" $WHISPER_STUDENT_ARGS &
  run whisper_dld dld "${EPOCHS_WHISPER:-12}" $WHISPER_STUDENT_ARGS $DLD_ARGS &
fi
if [[ " $FAMILIES " == *" conformer "* ]]; then
  run conformer_ld ld "${EPOCHS_CONFORMER:-5}" $CONFORMER_STUDENT_ARGS &
  run conformer_dld dld "${EPOCHS_CONFORMER:-5}" $CONFORMER_STUDENT_ARGS $DLD_ARGS &
fi
wait
