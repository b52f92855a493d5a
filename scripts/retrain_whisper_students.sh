#!/usr/bin/env bash
# Issue 20, part 1: retrain the Whisper LD/DLD pair with the recipe the gate ablation chose on valid (keep
# probability 0.75, A1 never dropped) on a 30 h synthetic corpus that holds none of the evaluation sets'
# sentences, validating on the same valid set as the ablation. LD and DLD side by side, one thread each
# (scripts/throughput.sh: 2 x 1 thread gave 4,479 steps/h in all, 1 x 2 threads 4,806; side by side lets one
# session train both). Logs in RUNS/whisper_{ld,dld}.log; every epoch checkpoints; RESUME=1 continues.
# Usage: bash scripts/retrain_whisper_students.sh   (MAX_STEPS, default 4000; RUNS, default runs/retrain; RESUME)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
PY=.venv/bin/python
$PY -m dld_core synth --out corpus/whisper --hours 5.5 --seed 1
$PY -m dld_core real-dev --out corpus/real_dev
$PY -m dld_core synth --out corpus/whisper30 --hours 30 --seed 1 --exclude corpus/whisper/valid.jsonl \
    corpus/whisper/test.jsonl corpus/whisper/fsdd_valid.jsonl corpus/whisper/fsdd_test.jsonl corpus/real_dev/real_dev.jsonl
KEEP_PROB=0.75 PROTECTED=A1 FAMILIES=whisper VALID=corpus/whisper/valid.jsonl MAX_STEPS=${MAX_STEPS:-4000} \
    EPOCHS_WHISPER=100 RUNS=${RUNS:-runs/retrain} bash scripts/students.sh checkpoints/teacher corpus/whisper30
