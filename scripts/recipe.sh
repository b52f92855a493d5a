# The shipped recipe, sourced by make_checkpoints.sh and ablation.sh so that the ablation trains the same
# architecture as the shipped checkpoints. 12 conformer modules, d=96; 2x subsampling (20 ms frames: the
# synthetic speech averages ~15 characters per second, too dense for character CTC at 40 ms frames on this
# budget); no SpecAugment on this budget.
ARCH="--layers 12 --d-model 96 --heads 4 --ffn 384 --kernel 15 --subsampling 2 --no-spec-augment --seed 0"
BATCH_SECONDS=60
STUDENT_LR="--lr 1e-3 --warmup 50"      # LD and DLD students (initialised from the teacher)
