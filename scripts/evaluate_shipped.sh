#!/usr/bin/env bash
# Evaluate the shipped models (checkpoints/<model>) on the three test sets with both decoders
# (scripts/evaluate_runs.sh), then write the tables and the figure, and the latency benchmark.
# Usage: bash scripts/evaluate_shipped.sh [CORPUS] [MODELS...]
set -euo pipefail
cd "$(dirname "$0")/.."
CORPUS=${1:-corpus/whisper}
shift || true
pairs=()
for name in ${*:-teacher ld dld conformer_ld conformer_dld}; do
  [ -d "checkpoints/$name" ] && pairs+=("$name=checkpoints/$name")
done
OUT=results bash scripts/evaluate_runs.sh "$CORPUS" "${pairs[@]}"
# Layer importance of the Whisper models on the synthetic test: drop-one from full depth (beam WER with a
# bootstrap interval, KL to the teacher) and the greedy drop path by WER; the same held-out LM as above.
HELD_OUT="--exclude $CORPUS/valid.jsonl --exclude $CORPUS/test.jsonl --exclude corpus/real_dev/real_dev.jsonl"
export DLD_DECODER_DIR=$(.venv/bin/python -m dld_core build-lm --order 2 $HELD_OUT | tail -1 | awk '{print $NF}')
for name in teacher ld dld; do
  [ -d "checkpoints/$name" ] && .venv/bin/python -m dld_core importance --checkpoint "checkpoints/$name" \
      --teacher checkpoints/teacher --manifest "$CORPUS/test.jsonl" --limit 150 --decoder beam --criterion wer \
      --json "results/importance.$name.json"
done
.venv/bin/python -m dld_core report --results results --out results
[ -d checkpoints/dld ] && .venv/bin/python -m dld_core bench --checkpoint checkpoints/dld --seconds 10 --json results/bench.json
