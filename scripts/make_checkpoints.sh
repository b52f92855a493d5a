#!/usr/bin/env bash
# Reproduce the shipped checkpoints and the results table with the project's own CLI:
#   corpus -> teacher -> LD and DLD students -> export -> evaluate -> table + figure
# Usage: bash scripts/make_checkpoints.sh      (CPU; DEVICE=cuda on a GPU, THREADS for torch CPU threads)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
PY=.venv/bin/python
DEVICE=${DEVICE:-cpu}
THREADS=${THREADS:-2}
CORPUS=${CORPUS:-corpus/main}
RUNS=${RUNS:-runs}
source scripts/recipe.sh
ARCH="$ARCH --batch-seconds $BATCH_SECONDS --device $DEVICE"

$PY -m dld_core synth --out "$CORPUS" --hours 2.5 --seed 0
# The shipped teacher ran an 8-epoch schedule, extended with `--resume --epochs N` to 10 (step 638), 28
# (step 1560: a warm restart of the cosine schedule) and 36 (step 1620); see checkpoints/teacher/train_log.jsonl.
# This runs the 36-epoch schedule directly (no restarts), so its numbers will differ somewhat.
$PY -m dld_core train --recipe teacher --train "$CORPUS/train.jsonl" --valid "$CORPUS/valid.jsonl" \
    --out "$RUNS/teacher" --epochs ${TEACHER_EPOCHS:-36} --lr 2e-3 --warmup 150 --threads "$THREADS" $ARCH
# LD and DLD: same architecture, data and initialisation (the teacher's weights); DLD gets fewer epochs
# so that its wall time stays at or below LD's. lambda 1, tau 2: chosen on valid (scripts/ablation.sh).
# They run side by side, one thread each.
$PY -m dld_core train --recipe ld --train "$CORPUS/train.jsonl" --valid "$CORPUS/valid.jsonl" \
    --out "$RUNS/ld" --teacher "$RUNS/teacher" --init-from-teacher --epochs ${LD_EPOCHS:-6} $STUDENT_LR \
    --threads 1 --quiet $ARCH > "$RUNS/ld.log" 2>&1 &
LD_PID=$!
$PY -m dld_core train --recipe dld --train "$CORPUS/train.jsonl" --valid "$CORPUS/valid.jsonl" \
    --out "$RUNS/dld" --teacher "$RUNS/teacher" --init-from-teacher --epochs ${DLD_EPOCHS:-4} $STUDENT_LR \
    --lambda 1 --tau 2 --threads 1 --quiet $ARCH > "$RUNS/dld.log" 2>&1
wait $LD_PID

mkdir -p results
for name in teacher ld dld; do
  $PY -m dld_core export --run "$RUNS/$name" --out "checkpoints/$name"
  for set in test fsdd_test; do
    label=$([ "$set" = test ] && echo synthetic_test || echo fsdd_test)
    $PY -m dld_core evaluate --checkpoint "checkpoints/$name" --manifest "$CORPUS/$set.jsonl" --masks 4 \
        --seed 0 --json "results/$name.$label.json"
  done
done
$PY -m dld_core report --results results --out results
$PY -m dld_core bench --checkpoint checkpoints/dld --seconds 10 --json results/bench.json
