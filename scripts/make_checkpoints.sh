#!/usr/bin/env bash
# Reproduce the shipped checkpoints and the results table from scratch, with the project's own CLI:
#   corpus -> teacher -> LD and DLD students -> evaluate -> figure -> checkpoints/{teacher,ld,dld}
# Usage: bash scripts/make_checkpoints.sh            (CPU, 2 threads per job; DEVICE=cuda for a GPU)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
PY=.venv/bin/python
DEVICE=${DEVICE:-cpu}
THREADS=${THREADS:-2}
CORPUS=${CORPUS:-corpus/main}
RUNS=${RUNS:-runs}
ARCH="--layers 12 --d-model 96 --heads 4 --ffn 384 --kernel 15 --batch-seconds 120 --seed 0 --device $DEVICE"

$PY -m dld_core synth --out "$CORPUS" --hours 2.5 --seed 0
# The shipped teacher was started with a 10-epoch schedule and extended to 25 epochs at step 675 with
# `--resume --epochs 25` (see checkpoints/teacher/train_log.jsonl); this runs the 25-epoch schedule directly.
$PY -m dld_core train --recipe teacher --train "$CORPUS/train.jsonl" --valid "$CORPUS/valid.jsonl" \
    --out "$RUNS/teacher" --epochs ${TEACHER_EPOCHS:-25} --lr 2e-3 --warmup 150 --threads "$THREADS" $ARCH
# LD and DLD: same architecture, data and initialisation (the teacher); DLD gets fewer epochs so that
# its wall time stays at or below LD's. They run side by side, one thread each.
$PY -m dld_core train --recipe ld --train "$CORPUS/train.jsonl" --valid "$CORPUS/valid.jsonl" \
    --out "$RUNS/ld" --teacher "$RUNS/teacher" --init-from-teacher --epochs ${LD_EPOCHS:-6} --lr 1e-3 --warmup 50 \
    --threads 1 $ARCH > "$RUNS/ld.log" 2>&1 &
LD_PID=$!
$PY -m dld_core train --recipe dld --train "$CORPUS/train.jsonl" --valid "$CORPUS/valid.jsonl" \
    --out "$RUNS/dld" --teacher "$RUNS/teacher" --init-from-teacher --epochs ${DLD_EPOCHS:-5} --lr 1e-3 --warmup 50 \
    --threads 1 $ARCH > "$RUNS/dld.log" 2>&1
wait $LD_PID

mkdir -p results
for name in teacher ld dld; do
  $PY -m dld_core export --run "$RUNS/$name" --out "checkpoints/$name"
  $PY -m dld_core evaluate --checkpoint "checkpoints/$name" --manifest "$CORPUS/test.jsonl" --masks 4 --seed 0 \
      --json "results/$name.synthetic_test.json"
  $PY -m dld_core evaluate --checkpoint "checkpoints/$name" --manifest "$CORPUS/fsdd_test.jsonl" --masks 4 --seed 0 \
      --json "results/$name.fsdd_test.json"
done
$PY -m dld_core report --results results --out results
