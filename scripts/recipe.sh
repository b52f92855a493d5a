# The shipped recipe, sourced by make_checkpoints.sh, students.sh, ablation.sh and throughput.sh: BATCH_SECONDS,
# TEACHER_ARGS, KEEP_PROB, PROTECTED, DLD_ARGS, WHISPER_STUDENT_ARGS and CONFORMER_STUDENT_ARGS, every training
# option of the shipped models (issue 12: a pretrained Whisper tiny.en teacher, two student families). Their one
# home is dld_core/shipped_recipe.py, where each is explained (the app's Train page starts from the same
# settings). The caller may set KEEP_PROB and PROTECTED (e.g. KEEP_PROB=0.75 PROTECTED=A1).
_recipe=$(KEEP_PROB="${KEEP_PROB:-}" PROTECTED="${PROTECTED:-}" "${PY:-.venv/bin/python}" -m dld_core.shipped_recipe) \
    || { echo "scripts/recipe.sh: cannot read the recipe from dld_core/shipped_recipe.py" >&2; return 1; }
eval "$_recipe"
unset _recipe
