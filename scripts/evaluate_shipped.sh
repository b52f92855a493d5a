#!/usr/bin/env bash
# Evaluate the shipped models (checkpoints/<model>) on the three test sets with both decoders, write
# results/<model>.<set>.<decoder>.json, the tables and the figure, and the latency benchmark.
# Beam decoding uses an LM built without the valid, test and real-dev sentences (honest test numbers),
# with the parameters tuned on valid (dld_core/decoder_params.json).
# Usage: bash scripts/evaluate_shipped.sh [CORPUS] [MODELS...]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
CORPUS=${1:-corpus/whisper}
shift || true
MODELS=${*:-teacher ld dld conformer_ld conformer_dld}
[ -f corpus/real_dev/real_dev.jsonl ] || $PY -m dld_core real-dev --out corpus/real_dev
HELD_OUT="--exclude $CORPUS/valid.jsonl --exclude $CORPUS/test.jsonl --exclude corpus/real_dev/real_dev.jsonl"
export DLD_DECODER_DIR=$($PY -m dld_core build-lm --order 2 $HELD_OUT | tail -1 | awk '{print $NF}')
echo "beam decoder files: $DLD_DECODER_DIR" >&2
mkdir -p results
for name in $MODELS; do
  for set in synthetic_test fsdd_test real_dev; do
    case $set in
      synthetic_test) manifest=$CORPUS/test.jsonl ;;
      fsdd_test) manifest=$CORPUS/fsdd_test.jsonl ;;
      real_dev) manifest=corpus/real_dev/real_dev.jsonl ;;
    esac
    $PY -m dld_core evaluate --checkpoint "checkpoints/$name" --manifest "$manifest" --masks 4 --seed 0 \
        --decoder greedy,beam --json "results/$name.$set.{decoder}.json" > /dev/null
  done
done
$PY -m dld_core report --results results --out results
$PY -m dld_core bench --checkpoint checkpoints/dld --seconds 10 --json results/bench.json
