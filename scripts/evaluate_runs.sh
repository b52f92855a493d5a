#!/usr/bin/env bash
# Evaluate checkpoints (a shipped folder or a training run's best model) on the three test sets with both
# decoders: results go to OUT/<name>.<set>.<decoder>.json. Beam decoding uses an LM built without the
# valid, test and real-dev sentences, with the parameters tuned on valid (dld_core/decoder_params.json).
# Usage: OUT=results bash scripts/evaluate_runs.sh CORPUS NAME=CHECKPOINT [NAME=CHECKPOINT ...]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
CORPUS=$1
shift
OUT=${OUT:-results}
[ -f corpus/real_dev/real_dev.jsonl ] || $PY -m dld_core real-dev --out corpus/real_dev
HELD_OUT="--exclude $CORPUS/valid.jsonl --exclude $CORPUS/test.jsonl --exclude corpus/real_dev/real_dev.jsonl"
export DLD_DECODER_DIR=$($PY -m dld_core build-lm --order 2 $HELD_OUT | tail -1 | awk '{print $NF}')
mkdir -p "$OUT"
for pair in "$@"; do
  name=${pair%%=*}
  ckpt=${pair#*=}
  for set in synthetic_test fsdd_test real_dev; do
    case $set in
      synthetic_test) manifest=$CORPUS/test.jsonl ;;
      fsdd_test) manifest=$CORPUS/fsdd_test.jsonl ;;
      real_dev) manifest=corpus/real_dev/real_dev.jsonl ;;
    esac
    $PY -m dld_core evaluate --checkpoint "$ckpt" --manifest "$manifest" --masks 4 --seed 0 \
        --decoder greedy,beam --json "$OUT/$name.$set.{decoder}.json" > /dev/null
  done
done
