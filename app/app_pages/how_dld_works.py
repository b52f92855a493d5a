"""How DLD works: teacher, LD and DLD in plain words, a live picture of the gated encoder (which modules run
for the current mask and the compute it saves), a three-step story on a sample clip, and a glossary.

The story follows the DLD student the app opens by default (app.state.paths.default_student). A CTC student: its
teacher checkpoint and its CTC transcripts (dld_core.story.choose_story). An encoder-decoder student (dld_core.
seq2seq.has_text_decoder): the unchanged pretrained Whisper it was distilled from and the text decoders' greedy
transcripts in the student's input mode (dld_core.story.choose_text_story); the page's words follow."""
from __future__ import annotations

import html
from pathlib import Path
from typing import Optional

import streamlit as st

from app.state.checkpoints import (CheckpointEntry, checkpoint_key, find_checkpoints, get_pretrained_whisper,
                                   model_config_of)
from app.state.clip_names import sample_label
from app.state.clips import load_clip_file, load_samples, samples_key
from app.state.paths import checkpoints_dir, default_student, default_teacher, samples_manifest
from app.state.results import best_mask, gflops_for, score, student_result, teacher_result
from app.views import layer_strip, pickers
from dld_core import masks
from dld_core.checkpoint import read_config
from dld_core.config import RECIPE_LABELS
from dld_core.families import describe_role
from dld_core.safe_io import CheckpointError
from dld_core.seq2seq import has_text_decoder, input_mode_of
from dld_core.story import pretrained_name, pretrained_source

DIAGRAM_SECONDS = 10.0          # the compute figures are for a 10 s clip
MODULES_KEY = "how_modules"     # the modules that run in the picture (a multi-select)
STEP_KEY = "story_step"
STEPS = {1: "① Full depth", 2: "② Drop half · static teacher", 3: "③ Drop half · DLD student"}

st.title("How DLD works")
st.caption("One speech recognizer that can run at any depth, chosen per request: skip modules of the encoder "
           "to save compute, and keep the transcript usable. Here is the idea in three models, a picture and "
           "a three-step experiment.")

# Where each audience goes next (the app root "/" opens this page).
with st.container(horizontal=True, wrap=True, gap="small", key="how_audiences"):
    st.caption("Teachers and students: read on.")
    st.page_link("app_pages/inspect.py", label="Engineers: try any mask on a clip in Inspect",
                 icon=":material/graphic_eq:")
    st.page_link("app_pages/budgets.py", label="Budget owners: accuracy per GFLOP in Budgets", icon=":material/speed:")
    st.page_link("app_pages/importance.py", label="Researchers: which module matters in Layer importance",
                 icon=":material/bar_chart:")
    st.page_link("app_pages/train.py", label="Train your own model", icon=":material/model_training:")

# ------------------------------------------------------------------------------------------- the models
def _arch(path: Path) -> Optional[tuple]:
    try:
        model = read_config(path).get("model", {})
    except CheckpointError:
        return None
    return model.get("family"), model.get("n_layers"), model.get("d_model")


def story_models() -> tuple[Optional[CheckpointEntry], Optional[CheckpointEntry]]:
    """(teacher, DLD student): the default teacher (else any teacher); checkpoints/dld when present, else
    the DLD student with the teacher's architecture and the best validation WER."""
    entries = find_checkpoints()
    teachers = [e for e in entries if e.recipe == "teacher"]
    teacher = next((e for e in teachers if e.path.resolve() == default_teacher().resolve()),
                   teachers[0] if teachers else None)
    students = [e for e in entries if e.recipe == "dld"]
    default = next((e for e in students if e.path.resolve() == default_student().resolve()), None)
    if default is not None or not students:
        return teacher, default
    want = _arch(teacher.path) if teacher is not None else None
    students.sort(key=lambda e: (want is not None and _arch(e.path) != want,
                                 e.valid_wer if e.valid_wer is not None else float("inf")))
    return teacher, students[0]


teacher_entry, dld_entry = story_models()


# ------------------------------------------------------------------------------------- the three models
# An encoder-decoder student's teacher is the pretrained Whisper it was distilled from, and its losses are on the
# text decoder's tokens: the cards say what the story below shows.
_student_config = model_config_of(dld_entry.path) if dld_entry is not None else None
TEXT_STORY = bool(_student_config is not None and _student_config.decoder)      # read from config.json: no weights yet
SOURCE = pretrained_source(read_config(dld_entry.path)) if TEXT_STORY else None
WHISPER = pretrained_name(SOURCE) if TEXT_STORY else None
c_t, c_ld, c_dld = st.columns(3, gap="medium")
if TEXT_STORY:
    with c_t.container(border=True):
        st.markdown("#### Teacher")
        st.markdown(f"**{WHISPER}, unchanged**: a pretrained speech recognizer, trained the usual way with **every "
                    "module always on** (full depth), then **frozen**. Its encoder listens; its **text decoder** "
                    "writes the transcript one token (a word or a piece of one) at a time. It is accurate at full "
                    "depth, but it never learnt to work with parts missing: skip some of its encoder's modules and "
                    "its transcript falls apart.")
    with c_ld.container(border=True):
        st.markdown("#### LD · layer dropping")
        st.markdown("The same gated network, text decoder included, but during training **random encoder modules "
                    "are switched off** at every step, and it learns only from the reference transcripts (the text "
                    "decoder's cross-entropy on the reference's tokens, plus the CTC loss of a head on the "
                    "encoder). It gets used to running with modules missing, so any subset of them still works.")
    with c_dld.container(border=True):
        st.markdown("#### DLD · distilled layer dropping")
        st.markdown(f"The same random dropping, plus a **teacher to imitate**: at every step the student, with its "
                    f"modules dropped, is pulled towards the full-depth {WHISPER}'s next-token probabilities "
                    "(KL(teacher ‖ student) on the text decoder's tokens, the distillation loss) as well as the "
                    "transcripts. Shallow versions of it stay close to the teacher: it **degrades gracefully**.")
else:
    with c_t.container(border=True):
        st.markdown("#### Teacher")
        st.markdown("A normal speech recognizer, trained the usual way with **every module always on** "
                    "(full depth), then **frozen**. It is accurate at full depth, but it never learnt to work with "
                    "parts missing: skip some of its modules and its transcript falls apart.")
    with c_ld.container(border=True):
        st.markdown("#### LD · layer dropping")
        st.markdown("The same gated network, but during training **random modules are switched off** at every "
                    "step, and it learns only from the reference transcripts (the CTC loss). It gets used to "
                    "running with modules missing, so any subset of them still works.")
    with c_dld.container(border=True):
        st.markdown("#### DLD · distilled layer dropping")
        st.markdown("The same random dropping, plus a **teacher to imitate**: at every step the student, with its "
                    "modules dropped, is pulled towards the full-depth teacher's output "
                    "(KL(teacher ‖ student), the distillation loss) as well as the transcripts. Shallow versions "
                    "of it stay close to the teacher: it **degrades gracefully**.")

if teacher_entry is None and dld_entry is None:
    st.error(f"No teacher or DLD checkpoint found under {checkpoints_dir()} — add one, or train one on the "
             "Train page, to see the live parts of this page.", icon=":material/error:")
teacher = pickers.load_or_error(teacher_entry.path, "Teacher") if teacher_entry is not None else None
dld = pickers.load_or_error(dld_entry.path, "DLD student") if dld_entry is not None else None
TEXT_STORY = TEXT_STORY and dld is not None and has_text_decoder(dld.model)
shown = dld if TEXT_STORY else (teacher or dld)                   # the model drawn in the picture


# -------------------------------------------------------------------------------- the gated encoder
def encoder_diagram_html(names, mask, roles=None, text_decoder: bool = False) -> str:
    """The gated encoder as a row of boxes: the modules that run, filled; skipped ones, dashed and struck.
    roles: (block, role) per module, from the model family (ModelConfig.module_roles), for the hover text.
    text_decoder: the output is an encoder-decoder model's text decoder (else the CTC head)."""
    boxes = []
    roles = roles or [(i, "gated module") for i in range(len(names))]
    for name, on, (block, role) in zip(names, mask, roles):
        state_txt = "runs" if on else "skipped"
        style = ("background:#4f46e5;color:#fff;border:2px solid #4f46e5;" if on else
                 "background:#f8fafc;color:#94a3b8;border:2px dashed #cbd5e1;")
        strike = "" if on else "text-decoration:line-through"
        boxes.append(f"<div class='dld-mod dld-{state_txt}' title='{html.escape(name)}: "
                     f"{html.escape(describe_role(block, role))} — {state_txt}' style='{style}padding:6px 10px;"
                     f"border-radius:8px;min-width:46px;text-align:center;font-weight:600'>"
                     f"<span style='{strike}'>{html.escape(name)}</span>"
                     f"<div style='font-size:11px;font-weight:400'>{state_txt}</div></div>")
    end = ("style='padding:6px 10px;border-radius:8px;background:#e2e8f0;color:#0f172a;text-align:center;"
           "font-size:13px'")
    arrow = "<span style='color:#64748b'>→</span>"
    return ("<div class='dld-encoder' style='display:flex;flex-wrap:wrap;align-items:center;gap:6px;"
            "font-family:Inter,system-ui,sans-serif'>"
            f"<div {end}>audio<br>features</div>{arrow}" + arrow.join(boxes) +
            f"{arrow}<div class='dld-output' {end}>{'text decoder' if text_decoder else 'CTC head'}<br>→ text</div>"
            "</div>")


st.subheader("The gated encoder, live")
if shown is not None:
    names = list(shown.model.module_names)
    n = len(names)
    half = tuple(masks.preset("every_other", n, n // 2, blocks=shown.config.module_blocks, protected=shown.protected))

    if st.session_state.get("_how_names") != names or MODULES_KEY not in st.session_state:
        st.session_state["_how_names"] = names
        saved = st.session_state.get(layer_strip.MASK_KEY)           # the mask last used on Inspect
        start = saved if saved is not None and len(saved) == n else (True,) * n
        st.session_state[MODULES_KEY] = [name for name, on in zip(names, start) if on]

    def show_step_mask() -> None:
        """A story step sets the picture to the mask it runs."""
        step = st.session_state.get(STEP_KEY)
        if step is not None:
            story_half = st.session_state.get("_story_half")
            st.session_state[MODULES_KEY] = list(names) if step == 1 else (
                story_half if story_half and set(story_half) <= set(names) else [m for m, on in zip(names, half) if on])

    st.caption((f"The encoder of {WHISPER} and of the DLD student" if TEXT_STORY else
                f"{RECIPE_LABELS.get(shown.recipe, shown.recipe)} model") + f" · {n} gated modules. Each module "
               "either runs or is skipped (its input passes straight on). Which ones run is the **mask**: pick "
               "modules here, or let the story below set them.")
    chosen = st.pills("Modules that run", names, selection_mode="multi", key=MODULES_KEY,
                      help="Click a module to skip it or to run it again.")
    mask = tuple(name in (chosen or []) for name in names)
    st.html(encoder_diagram_html(names, mask, shown.config.module_roles, text_decoder=TEXT_STORY))
    try:
        g = gflops_for(shown, DIAGRAM_SECONDS, mask)
        g_full = gflops_for(shown, DIAGRAM_SECONDS, (True,) * n)
    except (RuntimeError, ValueError) as exc:
        st.error(f"Cannot count the compute of this mask — {str(exc).splitlines()[0] if str(exc) else exc}",
                 icon=":material/error:")
    else:
        saved_pct = 100 * (1 - g / g_full) if g_full else 0.0
        g1, g2, g3 = st.columns(3)
        g1.metric("Modules that run", f"{sum(mask)}/{n}", help="The mask: how many gated modules run.")
        g2.metric("GFLOPs for a 10 s clip", f"{g:.2f}", help="Billions of arithmetic operations for one pass "
                  f"of the encoder and head over 10 s of audio with this mask (full depth: {g_full:.2f})."
                  + (" The text decoder, which then writes the transcript, is not counted: it costs the same "
                     "per token whichever modules run." if TEXT_STORY else ""))
        g3.metric("Compute saved", f"{saved_pct:.0f}%", help="Compared with running every module. The audio "
                  "front end and the output head always run, so even skipping everything saves less than 100%."
                  + (" The encoder's saving: the text decoder's cost is on top, and the same." if TEXT_STORY else ""))
    if sum(mask) == 0:
        st.caption("With every module skipped only the front end and the "
                   + ("text decoder" if TEXT_STORY else "head") + " run: expect nonsense.")
else:
    st.info("No model to draw: add a checkpoint under checkpoints/.", icon=":material/info:")
    names, n, half = [], 0, ()


# ------------------------------------------------------------------------------------------- the story
@st.cache_data(max_entries=8, show_spinner="Finding a clip the models get right at full depth…")
def story_clip(teacher_key: str, student_key: Optional[str], samples_key: str, _teacher, _student,
               _rows: list) -> Optional[dict]:
    """The sample the models transcribe best at full depth: lowest max(teacher WER, DLD WER), then lowest
    teacher WER, then the longest sentence (more words show more). None when no sample can be used."""
    best, best_rank = None, None
    for row in _rows:
        text = str(row.get("text", ""))
        try:
            clip = load_clip_file(Path(row["audio_filepath"]))
            t_wer = score(text, teacher_result(teacher_key, clip.digest, _teacher, clip.samples)["text"])
            s_wer = None
            if _student is not None:
                full = (True,) * _student.model.num_modules
                s_wer = score(text, student_result(student_key, clip.digest, full, None, _student,
                                                   clip.samples)["text"])
        except (OSError, RuntimeError, ValueError):
            continue
        if t_wer is None:
            continue
        worst = max(t_wer["wer"], s_wer["wer"] if s_wer else 0.0)
        rank = (worst, t_wer["wer"], -len(text.split()))
        if best_rank is None or rank < best_rank:
            best, best_rank = row, rank
    return best


@st.cache_data(max_entries=8, show_spinner="Choosing the clip and the half mask that show the point…")
def story_choice(teacher_key: str, student_key: str, samples_key: str, protected: tuple, _teacher, _student,
                 _rows: list) -> Optional[dict]:
    """dld_core.story.choose_story over the sample clips: the multi-word clip and half mask (keeping the
    `protected` module indices) on which the DLD student beats the static teacher most clearly (WER and CER).
    {"row", "active"} or None."""
    from dld_core.story import choose_story
    usable, clips = sample_clips(_rows)
    try:
        found = choose_story(_teacher.model, _student.model, clips, protected=list(protected))
    except (RuntimeError, ValueError):
        return None
    return None if found is None else {"row": usable[found["clip"]], "active": found["active"]}


@st.cache_data(max_entries=8, show_spinner="Choosing the clip and the half mask that show the point (the text "
                                           "decoders read every clip at several depths: a minute or two)…")
def text_story_choice(student_key: str, source: str, samples_key: str, mode: str, protected: tuple, _student,
                      _pretrained, _rows: list) -> Optional[dict]:
    """dld_core.story.choose_text_story over the sample clips (an encoder-decoder student, its text decoder in input
    `mode`, against the unchanged pretrained Whisper `source`): the story's dict with its sample row ("row"); when
    no pair shows the student ahead, the pair where it comes closest ("student_ahead" False). None when no sample
    can be used."""
    from dld_core.story import choose_text_story
    usable, clips = sample_clips(_rows)
    try:
        found = choose_text_story(_student.model, _pretrained, clips, mode=mode, protected=list(protected),
                                  fallback=True)
    except (RuntimeError, ValueError):
        return None
    return None if found is None else {**found, "row": usable[found["clip"]]}


def sample_clips(rows: list) -> tuple[list, list]:
    """(the rows whose audio reads, their (waveform, reference text) pairs)."""
    usable, clips = [], []
    for row in rows:
        try:
            clips.append((load_clip_file(Path(row["audio_filepath"])).samples, str(row.get("text", ""))))
        except (OSError, ValueError):
            continue
        usable.append(row)
    return usable, clips


def candidates_text(protected: list) -> str:
    """The story's candidate half masks in words (dld_core.story.half_masks)."""
    kinds = "(every second module, the first half, whole blocks, random ones)"
    if not protected:
        return f"a few half masks {kinds}"
    return f"a few half masks that keep {' and '.join(protected)}, as the student was trained to {kinds}"


st.subheader("The experiment in three clicks")
st.caption("One clip, three runs. Watch the word error rate (WER) and the character error rate (CER): 0% is a "
           "perfect transcript."
           + (f" All three transcripts are written by a text decoder (greedy, the student's {input_mode_of(dld.info)} "
              "input): the teacher's, then the DLD student's own. Numbers such as “555” count as the words said."
              if TEXT_STORY else ""))
if teacher is None and not TEXT_STORY:
    st.error("The story needs the teacher (checkpoints/teacher), which is missing or unusable.",
             icon=":material/error:")
    st.stop()
if dld is None:
    st.info("No DLD student yet (checkpoints/dld): step ③ is unavailable until one is trained or shipped.",
            icon=":material/info:")
try:
    rows = load_samples()
except (OSError, ValueError) as exc:
    rows = []
    st.error(f"The sample clips cannot be read — {str(exc).splitlines()[0]}", icon=":material/error:")
if not rows:
    st.info(f"No sample clips found ({samples_manifest()}): the story needs one.", icon=":material/info:")
    st.stop()

s_key = checkpoint_key(dld.path) if dld is not None else None
protected = [m for m, on in zip(dld.model.module_names, masks.as_bools(dld.protected, dld.model.num_modules))
             if on] if dld is not None else []
if TEXT_STORY:
    # An encoder-decoder student: its teacher is the unchanged pretrained Whisper it was distilled from, and every
    # step is a text decoder's greedy transcript in the student's input mode (dld_core.story.choose_text_story).
    mode = input_mode_of(dld.info)
    try:
        pretrained = get_pretrained_whisper(SOURCE)
    except (CheckpointError, OSError, RuntimeError, ValueError) as exc:
        st.error(f"The story compares the DLD student with {WHISPER}, unchanged ({SOURCE}), which cannot be loaded "
                 f"here — {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}", icon=":material/error:")
        st.stop()
    t_names = list(dld.model.module_names)
    choice = text_story_choice(s_key, SOURCE, samples_key(rows), mode, tuple(masks.kept(dld.protected, len(t_names))),
                               dld, pretrained, rows)
    if choice is None:
        st.error("None of the sample clips can be transcribed (or none has a reference of several words).",
                 icon=":material/error:")
        st.stop()
    row = choice["row"]
    t_half = tuple(masks.as_bools(choice["active"], len(t_names)))
    HOW = f"text decoder, greedy, {mode} input"
    STEP_MODEL = {1: f"Teacher · {WHISPER}, unchanged", 2: f"Teacher · {WHISPER}, unchanged", 3: "DLD student"}

    def run(step_no: int) -> Optional[dict]:
        """(model, mask, transcript, the text scored) of one step: the story's own runs."""
        r = choice[{1: "teacher_full", 2: "teacher_half", 3: "student_half"}[step_no]]
        label = f"{dld_entry.label} · {HOW}" if step_no == 3 else f"{WHISPER}, unchanged (pretrained) · {HOW}"
        return {"model": STEP_MODEL[step_no], "label": label, "names": t_names,
                "mask": (True,) * len(t_names) if step_no == 1 else t_half, "text": r["text"], "scored": r["spoken"]}

    HOW_CHOSEN = (f"the clip and half of the modules on which, among the sample clips with several words and "
                  f"{candidates_text(protected)}, the DLD student is furthest ahead of the teacher"
                  if choice["student_ahead"] else
                  f"the clip and half of the modules on which, among the sample clips with several words and "
                  f"{candidates_text(protected)}, the DLD student comes closest to the teacher: on these clips it is "
                  "not ahead with any of them")
    STORY = {1: f"The teacher, **{WHISPER} unchanged** (the pretrained model the DLD student was distilled from), "
                "with **every module running**: its text decoder writes this clip's best transcript.",
             2: f"The **same Whisper with half of its encoder modules skipped** ({HOW_CHOSEN}). It was never "
                "trained that way, so it usually **collapses**: wrong words, missing words or nothing at all.",
             3: "The **DLD student with the same half of its modules skipped**, through its own text decoder. It was "
                f"trained with modules dropped and taught by {WHISPER}, so it usually **degrades gracefully**: the "
                "same or nearly the same words, for about half the encoder's compute."}
else:
    t_key = checkpoint_key(teacher.path)
    same_arch = dld is not None and _arch(dld.path) == _arch(teacher.path)
    if dld is not None and not same_arch:
        st.caption(f"The DLD student found ({dld_entry.label}) is not a student of this teacher (another "
                   f"architecture, {dld.model.num_modules} modules): step ③ compares across architectures.")
    choice = (story_choice(t_key, s_key, samples_key(rows), tuple(masks.kept(dld.protected, dld.model.num_modules)),
                           teacher, dld, rows) if same_arch else None)
    row = choice["row"] if choice is not None else story_clip(t_key, s_key if same_arch else None, samples_key(rows),
                                                              teacher, dld if same_arch else None, rows)
    if row is None:
        st.error("None of the sample clips can be transcribed (or none has a reference text).", icon=":material/error:")
        st.stop()
    t_names = list(teacher.model.module_names)
clip = load_clip_file(Path(row["audio_filepath"]))
reference = str(row.get("text", ""))
st.markdown(f"**Clip:** {sample_label(row)}")
st.audio(row["audio_filepath"])

step = st.segmented_control("Step", list(STEPS), format_func=STEPS.get, default=1, required=True,
                            key=STEP_KEY, on_change=show_step_mask)
if not TEXT_STORY:
    t_full = teacher_result(t_key, clip.digest, teacher, clip.samples)

    def story_half() -> tuple[bool, ...]:
        """The half mask of steps ② and ③: the story's choice (dld_core.story); else the half of the modules the
        DLD student misses least on this clip (its best half-depth mask, closest to the teacher), run by both
        models; without a DLD student of this teacher, every second block."""
        n_t = len(t_names)
        if choice is not None:
            return tuple(masks.as_bools(choice["active"], n_t))
        if dld is not None and same_arch:
            best = best_mask(s_key, clip.digest, n_t // 2, t_key, reference, dld, clip.samples,
                             t_full["log_probs"])
            if best is not None:
                return tuple(best)
        return tuple(masks.preset("every_other", n_t, n_t // 2, blocks=teacher.config.module_blocks,
                                 protected=dld.protected if dld is not None and same_arch else ()))

    t_half = story_half()

    def run(step_no: int) -> Optional[dict]:
        """(model, mask, transcript, score) of one step, through the app's cached result paths."""
        if step_no == 1:
            return {"model": "Teacher", "label": teacher_entry.label, "names": t_names,
                    "mask": (True,) * len(t_names), "text": t_full["text"]}
        if step_no == 2:
            res = student_result(t_key, clip.digest, t_half, None, teacher, clip.samples)
            return {"model": "Teacher", "label": teacher_entry.label, "names": t_names, "mask": t_half,
                    "text": res["text"]}
        if dld is None:
            return None
        d_names = list(dld.model.module_names)
        d_half = t_half if same_arch else tuple(masks.preset("every_other", len(d_names), len(d_names) // 2,
                                                             blocks=dld.config.module_blocks, protected=dld.protected))
        res = student_result(s_key, clip.digest, d_half, t_key, dld, clip.samples, t_full["log_probs"])
        return {"model": "DLD student", "label": dld_entry.label, "names": d_names, "mask": d_half, "text": res["text"]}

    HOW_CHOSEN = (f"the clip and half of the modules on which, among the sample clips with several words and "
                  f"{candidates_text(protected if same_arch else [])}, the DLD student is furthest ahead of the "
                  "teacher" if choice is not None else "the half the DLD student misses least on this clip")
    STORY = {1: "The teacher with **every module running**: this is the clip's best transcript.",
             2: f"The **same teacher with half of its modules skipped** ({HOW_CHOSEN}). It was never trained that "
                "way, so it usually **collapses**: wrong words, missing words or nothing at all.",
             3: "The **DLD student with the same half of its modules skipped**. It was trained with modules "
                "dropped and taught by the teacher, so it usually **degrades gracefully**: the same or nearly "
                "the same words, for about half the compute."}
st.session_state["_story_half"] = [m for m, on in zip(t_names, t_half) if on]
try:
    result = run(step)
except (RuntimeError, ValueError) as exc:
    result = None
    st.error(f"This step cannot run — {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}",
             icon=":material/error:")
st.markdown(STORY[step])
WER_HELP = ("Word error rate: (substituted + deleted + inserted words) ÷ words in the reference. It can exceed "
            "100% when the model inserts extra words.")
CER_HELP = ("Character error rate: the same count over characters, so a misspelt word costs a little instead of "
            "a whole word. It shows a transcript that is nearly right.")
if result is not None:
    sc = score(reference, result.get("scored", result["text"]))
    with st.container(border=True):
        st.markdown(f"**{result['model']}** · {masks.describe(result['mask'], result['names'])}")
        st.code(result["text"] or "(empty transcript)", language=None, wrap_lines=True)
        st.caption(f"Reference: “{reference}” · model: {result['label']}")
        w, c = st.columns(2)
        w.metric("WER", f"{100 * sc['wer']:.0f}%" if sc else "—", help=WER_HELP)
        c.metric("CER", f"{100 * sc['cer']:.0f}%" if sc else "—", help=CER_HELP)
        if sc and sc["wer"] > 1:
            st.caption("WER above 100%: the transcript has more wrong words than the reference has words "
                       "(inserted words count as errors too).")
elif step == 3:
    st.caption("Step ③ needs a DLD student.")

so_far = []
for k in range(1, step + 1):
    try:
        r = result if k == step else run(k)
    except (RuntimeError, ValueError):
        r = None
    sc = score(reference, r.get("scored", r["text"])) if r else None
    so_far.append((k, sc))
cols = st.columns(3)
for (k, sc), col in zip(so_far, cols):
    col.metric(f"WER at step {'①②③'[k - 1]}", f"{100 * sc['wer']:.0f}%" if sc else "—", help=WER_HELP,
               delta=f"CER {100 * sc['cer']:.0f}%" if sc else None, delta_color="off", delta_arrow="off")


# -------------------------------------------------------------------------------------------- glossary
st.subheader("Glossary")
st.markdown("""
- **Module** — one gated piece of the encoder that can be skipped: in the Whisper models, the self-attention
  (A1 … A4) or the MLP (M1 … M4) sub-block of each of the 4 blocks; in the older conformers, a whole block (L1 …).
- **Mask** — which modules run for a request (on/off per module). “4/8” means 4 of 8 modules run.
- **KL (nats)** — Kullback–Leibler divergence: how different two probability distributions are — over characters
  per audio frame for a CTC head, over the next token for a text decoder — measured in nats (natural-log units).
  0 means identical; larger means more different. DLD trains on KL(teacher ‖ student).
- **CTC head / text decoder** — two ways to turn the encoder's output into text. A CTC head labels every audio
  frame with a character (or “blank”) at once; a text decoder (Whisper's) writes the transcript one token — a word
  or a piece of one — at a time, reading the whole encoder output for each.
- **Logit lens** — reading the transcript-probabilities out of the middle of the encoder by applying the output
  (CTC) head after module i, to see how close each depth already is to the final answer.
- **Posteriorgram** — a picture of a CTC head's output: for every audio frame (x axis), the probability of each
  character or “blank” (y axis).
- **WER / CER** — word / character error rate: (substituted + deleted + inserted) words (or characters) divided
  by the number in the reference. Lower is better. **WER can exceed 100%** because inserted words count as
  errors too: a 2-word reference transcribed as 5 wrong words has WER 250%.
- **Pareto front** — the models/masks for which nothing else is both cheaper and more accurate: the best
  accuracy you can get at each compute budget.
- **GFLOPs** — billions of floating-point operations for one pass over a clip: the compute a mask costs,
  independent of the machine (latency, in ms, depends on the machine).
""")
