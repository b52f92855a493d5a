#!/usr/bin/env bash
# Reproduce the shipped checkpoints and the results with the project's own CLI (issue 12's recipe,
# scripts/recipe.sh): corpus -> Whisper teacher -> four students -> export -> evaluate -> table + figure.
# Usage: bash scripts/make_checkpoints.sh   (CPU; DEVICE=cuda on a GPU; THREADS for the teacher)
# Long: hours on 2 CPU cores. Every training checkpoints each epoch; rerun with RESUME=1 to continue.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
PY=.venv/bin/python
DEVICE=${DEVICE:-cpu}
THREADS=${THREADS:-2}
CORPUS=${CORPUS:-corpus/whisper}
RUNS=${RUNS:-runs}
source scripts/recipe.sh
RESUME_FLAG=$([ "${RESUME:-0}" = 1 ] && echo --resume || true)

$PY -m dld_core synth --out "$CORPUS" --hours 5.5 --seed 1
$PY -m dld_core real-dev --out corpus/real_dev
$PY -m dld_core train --recipe teacher --train "$CORPUS/train.jsonl" --valid "$CORPUS/valid.jsonl" \
    --out "$RUNS/whisper_teacher" --epochs ${TEACHER_EPOCHS:-8} --batch-seconds $BATCH_SECONDS \
    --threads "$THREADS" --device "$DEVICE" $TEACHER_ARGS $RESUME_FLAG
$PY -m dld_core export --run "$RUNS/whisper_teacher" --out checkpoints/teacher
RUNS="$RUNS" bash scripts/students.sh checkpoints/teacher "$CORPUS"

declare -A FROM=([ld]=whisper_ld [dld]=whisper_dld [conformer_ld]=conformer_ld [conformer_dld]=conformer_dld)
for name in "${!FROM[@]}"; do
  $PY -m dld_core export --run "$RUNS/${FROM[$name]}" --out "checkpoints/$name"
done
bash scripts/evaluate_shipped.sh "$CORPUS"

# the encoder-decoder students from the CTC DLD student (README, "Training encoder-decoder students": the pinned pair);
# checkpoints/s2s_dld is the DLD one, the app's and CLI's default student
EPOCHS=3 TAG=pinned RUNS="$RUNS" CORPUS="$CORPUS" RESUME="${RESUME:-0}" EXTRA="--teacher checkpoints/dld \
    --init-from-teacher --teacher-input-mode clip --pinned-embedding" bash scripts/seq2seq_students.sh dld ld
$PY -m dld_core export --run "$RUNS/s2s_dld_pinned" --out checkpoints/s2s_dld
REAL_MASKS=4 OUT=results/seq2seq bash scripts/evaluate_seq2seq.sh "$CORPUS" s2s_dld=checkpoints/s2s_dld \
    s2s_ld="$RUNS/s2s_ld_pinned"
