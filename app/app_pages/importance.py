"""Layer importance over the sample set: drop-one ΔWER and ΔKL per module, and the greedy drop path."""
from __future__ import annotations

import pandas as pd
import streamlit as st

from app import state
from app.views import pickers, plots

st.title("Layer importance")
st.caption("Over the sample clips: what removing each module alone does to WER and to the KL from the "
           "teacher (drop-one, from full depth), and the greedy path — which module to drop next.")

student, teacher = pickers.load_models(need_teacher=True)
if teacher is not None and (teacher.config.family, teacher.config.n_mels) != (student.config.family, student.config.n_mels):
    st.warning("The teacher has another front end than the student: KL views are off, WER only.",
               icon=":material/warning:")
    teacher = None

try:
    samples = state.load_samples()
except (OSError, ValueError) as exc:
    st.error(f"The sample set cannot be read — {str(exc).splitlines()[0]}", icon=":material/error:")
    st.stop()
if not samples:
    st.info(f"No sample clips found ({state.samples_manifest()}).", icon=":material/info:")
    st.stop()

c1, c2 = st.columns([1, 2], vertical_alignment="bottom")
with c1:
    criterion = st.segmented_control("Greedy path criterion", ["kl", "wer"], default="kl", required=True,
                                     format_func=lambda c: {"kl": "KL to teacher", "wer": "WER"}[c],
                                     key="importance_criterion",
                                     help="Which module to drop next: the one whose removal raises this least.")
if criterion == "kl" and teacher is None:
    criterion = "wer"
    st.caption("No teacher: the path follows WER.")
ckpt_key = state.checkpoint_key(student.path)
teacher_key = state.checkpoint_key(teacher.path) if teacher is not None else None
samples_key = state.samples_key(samples)
args = (ckpt_key, teacher_key, samples_key, criterion)
done = state.computed_registry()
seconds = sum(float(r.get("duration") or 0) for r in samples)
with c2:
    slot = st.empty()
    go = False
    if args in done:
        slot.caption(f"Computed over {len(samples)} clips ({seconds:.0f} s of audio); cached for every session.")
    else:
        go = slot.button(f"Compute over {len(samples)} clips ({seconds:.0f} s of audio)", type="primary",
                         icon=":material/play_arrow:", key="importance_go")
if args not in done and not go:
    st.info("Press the button to measure every module (a few seconds per clip on a CPU). "
            "Results are cached and shared by every session.", icon=":material/info:")
    st.stop()

with st.spinner("Dropping modules one at a time…"):
    try:
        result = state.importance_over_samples(*args, student, teacher, samples)
    except (ValueError, RuntimeError, OSError) as exc:
        st.error(f"Cannot compute layer importance — {str(exc).splitlines()[0]}", icon=":material/error:")
        st.stop()
done.add(args)
slot.caption(f"Computed over {len(samples)} clips ({seconds:.0f} s of audio); cached for every session.")

imp, path = result["importance"], result["path"]
names = student.model.module_names
n = len(names)
base_wer, base_kl = imp.get("base_wer"), imp.get("base_kl")
m1, m2, m3 = st.columns(3)
m1.metric("Full-depth WER", f"{100 * base_wer:.1f}%" if base_wer is not None else "—")
m2.metric("Full-depth KL to teacher", f"{base_kl:.3f}" if base_kl is not None else "—")
order = [names[s["dropped"]] for s in path if s["dropped"] is not None]
m3.metric("Drop first", order[0] if order else "—", help="The first step of the greedy path")

b1, b2 = st.columns(2, gap="large")
with b1:
    dw = [100 * v if v is not None else 0.0 for v in imp["delta_wer"]]
    if any(v is not None for v in imp["delta_wer"]):
        st.plotly_chart(plots.importance_bars(dw, names, "Drop-one ΔWER (points)", "ΔWER (pts)", "#4f46e5"),
                        key="imp_wer", config={"displaylogo": False})
    else:
        st.info("No reference texts: ΔWER is unavailable.")
with b2:
    if any(v is not None for v in imp["delta_kl"]):
        dk = [v if v is not None else 0.0 for v in imp["delta_kl"]]
        st.plotly_chart(plots.importance_bars(dk, names, "Drop-one ΔKL (nats / frame)", "ΔKL", "#f59e0b"),
                        key="imp_kl", config={"displaylogo": False})
    else:
        st.info("No teacher: ΔKL is unavailable.")

steps = pd.DataFrame([{"step": i, "kept": s["kept"],
                       "dropped": "start" if s["dropped"] is None else names[s["dropped"]],
                       "metric": (s["kl"] if criterion == "kl" else (100 * s["wer"] if s["wer"] is not None else None)),
                       "wer": s["wer"], "kl": s["kl"]} for i, s in enumerate(path)])
steps.attrs["metric_name"] = "KL to teacher" if criterion == "kl" else "WER (%)"
g1, g2 = st.columns([2, 1], gap="large")
with g1:
    st.plotly_chart(plots.greedy_path_chart(steps), key="imp_path", config={"displaylogo": False})
with g2:
    st.markdown("**Drop order**")
    st.markdown(" → ".join(f"`{o}`" for o in order) or "—")
    table = steps.assign(wer=lambda d: (d["wer"] * 100).round(2), kl=lambda d: d["kl"].round(4))
    table = table[["kept", "dropped", "wer", "kl"]].rename(columns={"kept": "kept", "dropped": "dropped",
                                                                     "wer": "WER %", "kl": "KL"})
    st.dataframe(table, hide_index=True, width="stretch", key="imp_table", height=35 * (len(table) + 1) + 3)
