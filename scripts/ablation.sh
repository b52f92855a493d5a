#!/usr/bin/env bash
# DLD ablations of the student recipe, scored on the VALIDATION set (never on test). Two runs at a time,
# one thread each; the same batches, steps and seed for every run. Rerunning the script continues where
# it stopped: a finished and evaluated run is skipped, a stopped one continues from its resume state.
#   ABLATION=loss (default; EPOCHS default 1): lambda in {0.5, 1, 2} (tau 1), tau in {1, 2} (lambda 1), and
#       init from the teacher vs from scratch.
#   ABLATION=gates (issue 12; EPOCHS default 6): keep probability 0.5 (the paper; the shipped recipe) vs 0.75,
#       the first attention sub-block protected (--protected A1), whole-block gates (--gate-unit block), and
#       LD at keep probability 0.75 (is DLD still better than LD there?).
#   ABLATION=gates2 (issue 20; EPOCHS default 6; same folders, so its rows join the gates table): keep 0.75 with
#       A1 protected; per-module keep probabilities (A1 protected, the others from 0.6 to 0.9 by their drop-one
#       cost on valid in the shipped DLD student: a static teacher's drop-one cost saturates, every module
#       about +45 points); and keep 0.75 with A1 protected reached by a schedule from 1.0.
# Usage: [ABLATION=gates] bash scripts/ablation.sh [TEACHER] [CORPUS]   (STUDENT=whisper|conformer, EPOCHS, OUT, THREADS per run)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
TEACHER=${1:-checkpoints/teacher}
CORPUS=${2:-corpus/whisper}
ABLATION=${ABLATION:-loss}
case $ABLATION in
  loss) EPOCHS=${EPOCHS:-1}; NAME=ablation ;;
  gates|gates2) EPOCHS=${EPOCHS:-6}; NAME=ablation_gates ;;
  *) echo "ABLATION must be loss, gates or gates2" >&2; exit 2 ;;
esac
OUT=${OUT:-runs/$NAME}
source scripts/recipe.sh
BATCH=${BATCH:-$BATCH_SECONDS}
mkdir -p "$OUT" "results/$NAME"
# the student family under study: whisper (default) or conformer (STUDENT=conformer)
STUDENT_ARGS=$([ "${STUDENT:-whisper}" = conformer ] && echo "$CONFORMER_STUDENT_ARGS" || echo "$WHISPER_STUDENT_ARGS")
ARCH="--batch-seconds $BATCH --threads ${THREADS:-1} --quiet"

run() {   # name, extra train args (after the student recipe, so they override it)...
  local name=$1; shift
  local finished
  finished=$($PY -c "import json,sys; print(json.load(open(sys.argv[1])).get('finished', False))" \
      "$OUT/$name/metrics.json" 2>/dev/null || echo False)
  [ "$finished" = True ] && [ -f "results/$NAME/$name.json" ] && return 0
  local again=""
  [ -d "$OUT/$name/resume" ] && again="--resume"
  [ "$finished" = True ] || nice -n 5 $PY -m dld_core train --recipe dld --train "$CORPUS/train.jsonl" \
      --valid "$CORPUS/valid.jsonl" --out "$OUT/$name" --teacher "$TEACHER" --epochs "$EPOCHS" $STUDENT_ARGS $ARCH \
      $again "$@" >> "$OUT/$name.log" 2>&1
  nice -n 5 $PY -m dld_core evaluate --checkpoint "$OUT/$name" --manifest "$CORPUS/valid.jsonl" \
      --masks 4 --seed 0 --json "results/$NAME/$name.json" > /dev/null
}

if [ "$ABLATION" = loss ]; then
  run lambda1_tau1_init --init-from-teacher --lambda 1 --tau 1 &
  run lambda0.5_tau1_init --init-from-teacher --lambda 0.5 --tau 1
  wait
  run lambda2_tau1_init --init-from-teacher --lambda 2 --tau 1 &
  run lambda1_tau2_init --init-from-teacher --lambda 1 --tau 2
  wait
  run lambda1_tau1_scratch --no-init-from-teacher --lambda 1 --tau 1 --lr 2e-3 --warmup 200
elif [ "$ABLATION" = gates2 ]; then
  # drop-one cost of each module on valid (greedy) in a student trained with dropping -> keep probabilities
  IMPORTANCE=results/ablation_gates/importance.dld.valid.json   # of the earlier shipped DLD (keep 0.5)
  [ -f "$IMPORTANCE" ] || nice -n 5 $PY -m dld_core importance --checkpoint "${DROP_ONE_FROM:-checkpoints/dld}" \
      --manifest "$CORPUS/valid.jsonl" --json "$IMPORTANCE" > /dev/null
  KEEP_PROBS=$($PY -m dld_core keep-probs --importance "$IMPORTANCE" --protected A1 --low 0.6 --high 0.9)
  echo "per-module keep probabilities: $KEEP_PROBS"
  run keep0.75_A1 $DLD_ARGS --keep-prob 0.75 --protected A1 &
  run per_module_A1 $DLD_ARGS --keep-prob 0.75 --keep-probs "$KEEP_PROBS" --protected A1 &
  run schedule_keep0.75_A1 $DLD_ARGS --keep-prob 0.75 --keep-prob-start 1.0 --protected A1
  wait
else
  run keep0.5 $DLD_ARGS --keep-prob 0.5 &
  run keep0.75 $DLD_ARGS --keep-prob 0.75
  wait
  run protected_A1 $DLD_ARGS --keep-prob 0.5 --protected A1 &
  run block_gates $DLD_ARGS --keep-prob 0.5 --gate-unit block &
  run ld_keep0.75 --recipe ld --keep-prob 0.75          # LD at the higher keep probability: DLD's baseline there
  wait
fi
$PY -m dld_core report-ablation --results "results/$NAME" --out "results/$NAME.md"
