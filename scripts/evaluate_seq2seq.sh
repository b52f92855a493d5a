#!/usr/bin/env bash
# Evaluate encoder-decoder students (a run folder or a checkpoint) with their text decoder: the real dev set at every
# kept level, and LIMIT clips of the synthetic test and of FSDD's test at 8, 6, 4 and 2 kept (the text
# decoder costs about 10x the CTC head per clip on CPU); random masks that keep the protected modules, seed 0, MASKS
# per level (REAL_MASKS on the real dev set, default MASKS); decoders DECODERS on the real dev set, SUBSET_DECODERS on the others. Results:
# OUT/<name>.<set>.<decoder>.json (dld_core.evaluate's JSON, whose "manifest" names the subset; set: real_dev,
# synthetic_test, fsdd_test, as dld_core.report reads them).
# Usage: OUT=results/seq2seq bash scripts/evaluate_seq2seq.sh CORPUS NAME=CHECKPOINT [NAME=CHECKPOINT ...]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
CORPUS=$1
shift
OUT=${OUT:-results/seq2seq}
LIMIT=${LIMIT:-40}
MASKS=${MASKS:-2}
REAL_MASKS=${REAL_MASKS:-$MASKS}
DECODERS=${DECODERS:-whisper,whisper-beam,whisper-joint}
SUBSET_DECODERS=${SUBSET_DECODERS:-whisper,whisper-joint}
[ -f corpus/real_dev/real_dev.jsonl ] || $PY -m dld_core real-dev --out corpus/real_dev
for set in test fsdd_test; do            # LIMIT rows evenly spaced (FSDD's are sorted by digit and speaker), next to
  total=$(wc -l < "$CORPUS/$set.jsonl")   # their manifests (audio paths are relative)
  awk -v step=$(( total / LIMIT )) -v limit="$LIMIT" '(NR - 1) % step == 0 && n++ < limit' "$CORPUS/$set.jsonl" \
      > "$CORPUS/${set}_spread$LIMIT.jsonl"
done
mkdir -p "$OUT"
for pair in "$@"; do
  name=${pair%%=*}
  ckpt=${pair#*=}
  $PY -m dld_core evaluate --checkpoint "$ckpt" --manifest corpus/real_dev/real_dev.jsonl --masks "$REAL_MASKS" --seed 0 \
      --decoder "$DECODERS" --json "$OUT/$name.real_dev.{decoder}.json" > /dev/null
  for set in test fsdd_test; do
    key=$([ $set = test ] && echo synthetic_test || echo fsdd_test)
    $PY -m dld_core evaluate --checkpoint "$ckpt" --manifest "$CORPUS/${set}_spread$LIMIT.jsonl" --keep 8,6,4,2 \
        --masks "$MASKS" --seed 0 --decoder "$SUBSET_DECODERS" --json "$OUT/$name.$key.{decoder}.json" > /dev/null
  done
done
