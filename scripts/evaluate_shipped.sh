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
.venv/bin/python -m dld_core report --results results --out results
[ -d checkpoints/dld ] && .venv/bin/python -m dld_core bench --checkpoint checkpoints/dld --seconds 10 --json results/bench.json
