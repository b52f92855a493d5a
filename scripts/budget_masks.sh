#!/usr/bin/env bash
# The Budgets page's recommendation card for the shipped models: the best mask of every budget chosen on each
# model's validation set, and those masks evaluated on the three test sets with both decoders (the same
# held-out LM as scripts/evaluate_runs.sh): results/budget_masks/<name>.json (dld_core/recommend.py).
# Usage: bash scripts/budget_masks.sh [CORPUS] [MODELS...]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
CORPUS=${1:-corpus/whisper}
shift || true
HELD_OUT="--exclude $CORPUS/valid.jsonl --exclude $CORPUS/test.jsonl --exclude corpus/real_dev/real_dev.jsonl"
export DLD_DECODER_DIR=$($PY -m dld_core build-lm --order 2 $HELD_OUT | tail -1 | awk '{print $NF}')
mkdir -p results/budget_masks
for name in ${*:-dld ld teacher}; do
  [ -d "checkpoints/$name" ] || continue
  $PY -m dld_core.recommend --checkpoint "checkpoints/$name" --valid "$CORPUS/valid.jsonl" \
      --test "$CORPUS/test.jsonl" --test "$CORPUS/fsdd_test.jsonl" --test corpus/real_dev/real_dev.jsonl \
      --json "results/budget_masks/$(echo "$name" | tr / _).json"
done
