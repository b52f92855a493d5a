#!/usr/bin/env bash
# Issue 20, part 2: the encoder-decoder students (Whisper tiny.en's encoder behind gates, its own text decoder, a CTC
# head on the encoder) trained from the unchanged pretrained model on the 5.5 h synthetic corpus, clip-alone input,
# keep probability 0.5 with A1 never dropped, no dropout (a fresh Whisper student's default since 023362b: the runs
# before it trained with 0.1 on every residual branch, which breaks the pretrained network), encoder lr 2e-5 and
# decoder lr 1e-5 (without dropout they keep full depth at the unchanged model's WER on valid), the dld teacher's
# top-64 token posteriors cached on disk (the first epoch pays the teacher's passes; later epochs and resumed runs
# do not). Logs in RUNS/s2s_<recipe>.log; every epoch checkpoints; RESUME=1 continues. The main pair starts from
# the shipped CTC DLD student's encoder and CTC head (README, "Training encoder-decoder students"), 3 epochs, the
# token teacher on the clip alone (first epoch, one thread, beside the LD run: ~30 s a step with a padded teacher,
# ~12 s with the clip-alone one):
#   EPOCHS=3 TAG=ctcinit EXTRA="--teacher checkpoints/dld --init-from-teacher --teacher-input-mode clip" \
#     bash scripts/seq2seq_students.sh dld ld
#   (after a stop: the same with RESUME=1)
# The shipped pair: the same with the token embedding pinned (frozen, read from the tiny.en package, not stored: a
# 36 MB checkpoint instead of 74 MB), started with the ctcinit run's teacher cache copied into runs/s2s_dld_pinned/:
#   EPOCHS=3 TAG=pinned EXTRA="--teacher checkpoints/dld --init-from-teacher --teacher-input-mode clip \
#     --pinned-embedding" bash scripts/seq2seq_students.sh dld ld
# (the runs from tiny.en itself: TAG=nodrop bash scripts/seq2seq_students.sh dld ld)
# Usage: bash scripts/seq2seq_students.sh [RECIPES...]   (default: dld ld; EPOCHS, default 10; RUNS, default runs;
#        THREADS, default 1; RESUME; EXTRA: more train options, e.g. "--freeze-decoder --stop-after-epochs 1", with
#        TAG naming the run RUNS/s2s_<recipe>_<TAG>; a TAG run starts from the untagged run's teacher cache)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
CORPUS=${CORPUS:-corpus/whisper}
RUNS=${RUNS:-runs}
mkdir -p "$RUNS"
ARGS="--objective seq2seq --pretrained default --input-mode clip --kd-top-k 64 --keep-prob 0.5 --protected A1
      --lr 1e-3 --encoder-lr 2e-5 --decoder-lr 1e-5 --warmup 100 --batch-seconds 80 --lambda 1 --tau 2 --seed 0
      --train $CORPUS/train.jsonl --valid $CORPUS/valid.jsonl --threads ${THREADS:-1} --quiet --epochs ${EPOCHS:-10}"
[ "${RESUME:-0}" = 1 ] && ARGS="$ARGS --resume"
for recipe in ${*:-dld ld}; do
  out="$RUNS/s2s_$recipe${TAG:+_$TAG}"
  if [ -n "${TAG:-}" ] && [ -d "$RUNS/s2s_$recipe/teacher_cache" ] && [ ! -d "$out/teacher_cache" ]; then
    mkdir -p "$out" && cp -r "$RUNS/s2s_$recipe/teacher_cache" "$out/"     # same batches, same teacher
  fi
  nice -n 5 $PY -m dld_core train --recipe "$recipe" --out "$out" $ARGS ${EXTRA:-} >> "$out.log" 2>&1 &
done
wait
