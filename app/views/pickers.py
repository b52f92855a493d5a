"""Checkpoint pickers (student / teacher) shared by the pages. Choices survive page switches."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import streamlit as st

from app.state.checkpoints import CheckpointEntry, find_checkpoints, get_checkpoint
from app.state.paths import checkpoints_dir, default_student, default_teacher, jobs_dir
from dld_core.checkpoint import read_config
from dld_core.safe_io import CheckpointError


VALID_WER_HELP = ("“valid WER” is the model's word error rate on its training run's validation set, at full "
                  "depth (lower is better; from the checkpoint's metrics.json).")


def _default_problem(path: Path) -> Optional[str]:
    """Why a default checkpoint folder is unusable (None when it is fine or simply absent)."""
    if not path.exists():
        return None
    try:
        read_config(path)
    except CheckpointError as exc:
        return str(exc)
    if not (path / "model.safetensors").is_file():
        return f"{path.name}: model.safetensors is missing"
    return None


def _pick(label: str, key: str, entries: list[CheckpointEntry], default: Path,
          prefer_recipes: tuple[str, ...], help: str) -> Optional[Path]:
    if not entries:
        return None
    paths = [str(e.path) for e in entries]
    labels = {str(e.path): e.label for e in entries}
    saved = st.session_state.get(f"_{key}_choice")
    if saved in paths:
        index = paths.index(saved)
    elif str(default) in paths:
        index = paths.index(str(default))
    else:
        preferred = [i for i, e in enumerate(entries) if e.recipe in prefer_recipes]
        index = preferred[0] if preferred else 0
    choice = st.selectbox(label, paths, index=index, format_func=lambda p: labels.get(p, p), key=key, help=help)
    st.session_state[f"_{key}_choice"] = choice
    return Path(choice) if choice else None


def model_pickers(need_teacher: bool = True) -> tuple[Optional[Path], Optional[Path]]:
    """Sidebar pickers. Shows one-line errors (never a traceback) and returns (student, teacher) paths;
    student is None when nothing usable exists (the caller stops)."""
    entries = find_checkpoints()
    students = [e for e in entries if e.recipe != "teacher"] or entries
    teachers = [e for e in entries if e.recipe == "teacher"]
    with st.sidebar:
        st.markdown("**Models**")
        default = default_student()                    # read from results/ once per run of the page
        problem = _default_problem(default)
        if problem:
            st.error(f"Default student unusable — {problem}", icon=":material/error:")
        student = _pick("Student", "student_ckpt", students, default, ("dld", "ld"),
                        "Any checkpoint folder under checkpoints/ or made by the Train page. " + VALID_WER_HELP)
        teacher = None
        if need_teacher:
            problem = _default_problem(default_teacher())
            if problem:
                st.error(f"Default teacher unusable — {problem}", icon=":material/error:")
            teacher = _pick("Teacher", "teacher_ckpt", teachers, default_teacher(), ("teacher",),
                            "The full-depth teacher used for the reference transcript and the KL views. "
                            + VALID_WER_HELP)
    if student is None:
        st.error(f"No checkpoints found under {checkpoints_dir()} or {jobs_dir()} — "
                 "add a checkpoint folder or train one on the Train page.", icon=":material/error:")
    elif need_teacher and teacher is None:
        st.error("No teacher checkpoint found (expected checkpoints/teacher): the teacher transcript and "
                 "teacher-referenced views are unavailable.", icon=":material/error:")
    return student, teacher


def load_or_error(path: Optional[Path], role: str):
    """The cached checkpoint, or None after a one-line st.error."""
    if path is None:
        return None
    try:
        return get_checkpoint(path)
    except CheckpointError as exc:
        st.error(f"{role} checkpoint cannot be used — {exc}", icon=":material/error:")
    except (OSError, RuntimeError, ValueError) as exc:
        st.error(f"{role} checkpoint cannot be loaded — {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}",
                 icon=":material/error:")
    return None


def load_models(need_teacher: bool = True):
    """Sidebar pickers + cached loading for a page: (student, teacher) checkpoints. Stops the page (after a
    one-line message) when no usable student exists; teacher is None when missing or unloadable."""
    student_path, teacher_path = model_pickers(need_teacher=need_teacher)
    student = load_or_error(student_path, "Student") if student_path is not None else None
    if student is None:
        st.stop()
    teacher = load_or_error(teacher_path, "Teacher") if teacher_path is not None else None
    return student, teacher
