"""Inspect: one clip, one layer mask — transcripts, WER/CER with a word diff, GFLOPs, latency,
spectrogram + posteriorgram and per-layer KL heatmaps. Everything updates on every toggle. An encoder-decoder
student also shows its text decoder's transcript, WER/CER and latency (dld_core.seq2seq) next to its CTC head's;
the CTC views stay on the CTC head."""
from __future__ import annotations

import streamlit as st

from app.state.checkpoints import checkpoint_key, checkpoint_name, checkpoint_summary
from app.state.clip_names import sample_label
from app.state.clips import load_clip_bytes, load_clip_file, load_samples
from app.state.paths import samples_manifest
from app.state.results import (beam_ready, beam_text, best_mask, drop_one_result, gflops_for, logmel, score,
                               student_result, teacher_result, text_decoder_result)
from app.views import diff, layer_strip, pickers, plots
from app.views.download import download_control
from app.views.messages import one_line
from dld_core import masks
from dld_core.audio import SAMPLE_RATE
from dld_core.features import MIN_SECONDS
from dld_core.seq2seq import has_text_decoder

st.title("Inspect")
st.caption("Pick a model, a clip and a layer mask. The mask is yours alone (per browser session) and is "
           "passed to the model on every call; the model itself is loaded once and shared.")

student, teacher = pickers.load_models(need_teacher=True)
with st.sidebar:
    info = checkpoint_summary(student)
    wer_txt = f" · valid WER {100 * info['valid_wer']:.1f}%" if isinstance(info["valid_wer"], (int, float)) else ""
    st.caption(f"Student: {checkpoint_name(student.path)} — {info['recipe']} {info['family']}, "
               f"{info['layers']} modules, d={info['d_model']}, {info['params_m']:.2f} M params{wer_txt}")
    if info["protected"]:
        st.caption(f"Trained never to drop {', '.join(info['protected'])}: masks without "
                   f"{'it' if len(info['protected']) == 1 else 'them'} are outside its training.")


# ------------------------------------------------------------------------------------------------ audio
def audio_problem(exc: BaseException) -> str:
    """One line for st.error. Uploads and recordings are decoded from bytes, which dld_core names "<bytes>":
    drop that prefix (the user knows which clip they gave)."""
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__).removeprefix("<bytes>: ")


def audio_section():
    """Returns (clip or None, reference text)."""
    try:
        samples = load_samples()
        sample_problem = None
    except (OSError, ValueError) as exc:
        samples, sample_problem = [], str(exc).splitlines()[0]
    options = ["Sample", "Record", "Upload"]
    source = st.segmented_control("Audio source", options, default="Sample" if samples else "Upload",
                                  required=True, key="audio_source")
    clip, reference_default, error = None, "", None
    if source == "Sample":
        if sample_problem:
            st.warning(f"The sample set cannot be read — {sample_problem}")
        if not samples:
            st.info(f"No sample clips found ({samples_manifest()}). Record or upload a clip instead.")
        else:
            paths = [r["audio_filepath"] for r in samples]
            by_path = {r["audio_filepath"]: r for r in samples}
            choice = st.selectbox("Sample clip", paths, format_func=lambda p: sample_label(by_path[p]),
                                  key="sample_choice")
            row = by_path[choice]
            reference_default = str(row.get("text", ""))
            try:
                clip = load_clip_file(choice)
            except (ValueError, OSError) as exc:
                error = str(exc).splitlines()[0]
            else:
                st.audio(choice)
    elif source == "Record":
        rec = st.audio_input("Record from your microphone", sample_rate=SAMPLE_RATE, key="recording")
        if rec is not None:
            try:
                clip = load_clip_bytes(rec.getvalue(), rec.name or "recording.wav")
            except (ValueError, OSError) as exc:
                error = audio_problem(exc)
    else:
        up = st.file_uploader("Upload a clip (wav, flac, mp3, ogg; up to 60 s)",
                              type=["wav", "flac", "mp3", "ogg"], key="upload")
        if up is not None:
            data = up.getvalue()
            try:
                clip = load_clip_bytes(data, up.name)
            except (ValueError, OSError) as exc:
                error = audio_problem(exc)
            else:
                st.audio(data)
    # Reference: prefilled from the sample, editable, optional. Re-prefill when the clip changes.
    ref_source = f"{source}:{clip.digest if clip else ''}"
    if st.session_state.get("_ref_source") != ref_source:
        st.session_state["_ref_source"] = ref_source
        st.session_state["reference"] = reference_default
    reference = st.text_input("Reference text (optional)", key="reference",
                              placeholder="Type what was said to get WER / CER and a word diff")
    if error:
        st.error(f"Cannot use this audio — {error}", icon=":material/error:")
        clip = None
    elif clip is not None and clip.duration < MIN_SECONDS:
        st.error(f"Cannot use this audio — it is {clip.duration:.2f} s long; at least {MIN_SECONDS} s is needed.",
                 icon=":material/error:")
        clip = None
    elif clip is not None and clip.silent:
        st.warning("This clip is silent (or nearly): expect an empty transcript.", icon=":material/volume_off:")
    if clip is not None and clip.warning:
        st.warning(f"{clip.name}: {clip.warning}", icon=":material/warning:")
    return clip, reference


module_names = student.model.module_names
n_layers = len(module_names)
ckpt_key = checkpoint_key(student.path)
teacher_key = checkpoint_key(teacher.path) if teacher is not None else None

left, right = st.columns([1, 1.6], gap="large")
with left:
    clip, reference = audio_section()


def best_k(k: int):
    """The best k-module mask for this clip: lowest KL to the teacher (or, without a usable teacher, to
    the student's own full-depth output)."""
    if clip is None:
        return None
    own = student_result(ckpt_key, clip.digest, (True,) * n_layers, None, student, clip.samples)["log_probs"]
    ref, ref_key = own, None
    if teacher is not None:
        t_lp = teacher_result(teacher_key, clip.digest, teacher, clip.samples)["log_probs"]
        if t_lp.shape[0] == own.shape[0]:
            ref, ref_key = t_lp, teacher_key
    return best_mask(ckpt_key, clip.digest, k, ref_key, st.session_state.get("reference", ""),
                     student, clip.samples, ref)


def kept_gflops(k: int) -> float:
    return gflops_for(student, len(clip.samples), tuple(masks.preset("first_k", n_layers, k)))


with right:
    # The "budget for k" line is about this clip: only with a clip loaded.
    mask = layer_strip.layer_strip(module_names, ckpt_key, best_k=best_k,
                                   kept_gflops=kept_gflops if clip is not None else None,
                                   blocks=student.config.module_blocks, protected=student.protected)
    download_control(student.path, module_names, mask, key="inspect_download")

if clip is None:
    st.info("Choose a sample, record or upload a clip to see transcripts and layer views.",
            icon=":material/info:")
    st.stop()

# ---------------------------------------------------------------------------------------------- results
t_res = None
if teacher is not None:
    try:
        t_res = teacher_result(teacher_key, clip.digest, teacher, clip.samples)
    except (RuntimeError, ValueError) as exc:
        st.error(f"The teacher cannot run on this clip — {one_line(exc)}", icon=":material/error:")
try:
    res = student_result(ckpt_key, clip.digest, mask, teacher_key, student, clip.samples,
                         t_res["log_probs"] if t_res else None)
except (RuntimeError, ValueError) as exc:
    st.error(f"The student cannot run on this clip — {one_line(exc)}", icon=":material/error:")
    st.stop()
DECODER_LABELS = {"greedy": "Greedy", "beam": "Beam (lexicon + LM)", "both": "Both"}
decoder = st.segmented_control("Decoder", list(DECODER_LABELS), format_func=DECODER_LABELS.get, default="greedy",
                               required=True, key="decoder",
                               help="Greedy: the most likely character in every frame. Beam: a search over "
                                    "spellings of real words, scored by a word language model (fewer misspellings).")
use_beam = False
if decoder in ("beam", "both"):
    ready, why = beam_ready(tuple(student.config.vocab))
    use_beam = ready
    if not ready:
        st.caption(f"Beam decoding is unavailable here ({why}); showing greedy transcripts"
                   + (" of the CTC heads (the text decoder's beam search needs no LM)."
                      if has_text_decoder(student.model) else "."))
s_beam = beam_text(ckpt_key, clip.digest, mask, student, res["log_probs"]) if use_beam else None
t_beam = (beam_text(teacher_key, clip.digest, masks.Mask.full(teacher.model.module_names), teacher,
                    t_res["log_probs"]) if use_beam and t_res is not None else None)
s_text = s_beam if s_beam is not None else res["text"]
t_text = t_beam if t_beam is not None else (t_res["text"] if t_res else "")
s_score = score(reference, s_text)
t_score = score(reference, t_text) if t_res else None

saved = 100 * (1 - res["gflops"] / res["gflops_full"]) if res["gflops_full"] else 0.0
m1, m2, m3, m4, m5 = st.columns(5)
m1.metric("GFLOPs (mask)", f"{res['gflops']:.3f}",
          delta=f"-{saved:.0f}% vs full" if saved >= 0.5 else "full depth",     # short: whole at 1400 px
          delta_color="inverse" if saved >= 0.5 else "off", delta_arrow="auto" if saved >= 0.5 else "off",
          help="GFLOPs: billions of arithmetic operations for one pass of the model over this clip with this "
               f"mask (full depth: {res['gflops_full']:.3f}). Skipped modules cost nothing, so fewer modules on "
               "means less compute; the figure does not depend on the machine (latency does).")
m2.metric("Modules on", f"{sum(mask)}/{n_layers}",
          help="How many of the encoder's gated modules run for this mask (the layer strip's switches); the "
               "others are skipped and pass their input straight on.")
rtf = res["rtf"]     # the value stays short (no cut-off in a narrow column); RTF sits under it
m3.metric("Latency", f"{res['latency_ms']:.0f} ms", delta=f"RTF {rtf:.3f}" if rtf >= 0.001 else "RTF <0.001",
          delta_color="off", delta_arrow="off",
          help="Wall-clock time measured on this server: the student's forward pass with this mask + greedy "
               "decode (median of several runs; audio features are cached per clip). RTF, the real-time factor, "
               "is that time divided by the clip's duration: below 1 is faster than real time.")
wer_gap = 100 * (s_score["wer"] - t_score["wer"]) if s_score and t_score else None
m4.metric("WER", f"{100 * s_score['wer']:.1f}%" if s_score else "—",
          delta=None if wer_gap is None else ("same as teacher" if abs(wer_gap) < 0.05 else
                                              f"{wer_gap:+.1f} vs teacher"),     # points; short: whole
          delta_color="inverse" if wer_gap and abs(wer_gap) >= 0.05 else "off",
          delta_arrow="auto" if wer_gap and abs(wer_gap) >= 0.05 else "off",
          help="Word error rate of the student against the reference: (substituted + deleted + inserted "
               "words) ÷ words in the reference; lower is better. It can exceed 100%: inserted words count as "
               "errors too, so a transcript with more wrong words than the reference has words goes past 100%. "
               "The delta compares with the teacher's WER on the same clip, in percentage points.")
m5.metric("CER", f"{100 * s_score['cer']:.1f}%" if s_score else "—",
          help="Character error rate of the student against the reference: the same count as WER but over "
               "characters, so a misspelt word costs a little instead of a whole word. It can also exceed 100% "
               "(inserted characters).")
if has_text_decoder(student.model):
    st.caption("Latency, WER and CER above are the student's CTC head's; its text decoder's are under the text "
               "decoder's transcript below.")

def transcript(title: str, text: str, greedy_text: str, score, line: str = "", line_help=None) -> None:
    """One model's transcript (the chosen decoder's; with "Both", the greedy one under it), a caption line (an
    encoder-decoder student's scores) and its diff."""
    st.markdown(title + (" · beam" if use_beam else ""))
    st.code(text or "(empty transcript)", language=None, wrap_lines=True)
    if decoder == "both" and use_beam:
        st.caption("Greedy:")
        st.code(greedy_text or "(empty transcript)", language=None, wrap_lines=True)
    if line:
        st.caption(line, help=line_help)
    if score:
        st.html(diff.word_diff_html(score["diff"]))


def score_text(score) -> str:
    return f"WER {100 * score['wer']:.1f}% · CER {100 * score['cer']:.1f}%" if score else "no reference: no WER / CER"


def text_decoder_transcript() -> None:
    """An encoder-decoder student's text-decoder transcript for the mask (Whisper's cased, punctuated text; beam
    when the decoder choice says beam, with "Both" the greedy one under it; cached per model, clip, mask and
    decoder), its WER/CER (on its spoken form) and latency, and its diff."""
    searches = {"greedy": ["whisper"], "beam": ["whisper-beam"], "both": ["whisper-beam", "whisper"]}[decoder]
    with st.spinner("Text decoder…"):
        try:
            text_res = {d: text_decoder_result(ckpt_key, clip.digest, mask, d, student, clip.samples) for d in searches}
        except (RuntimeError, ValueError) as exc:
            st.error(f"The text decoder cannot run on this clip — {one_line(exc)}", icon=":material/error:")
            return
    main = text_res[searches[0]]
    beam = main["decoder"] == "whisper-beam"
    st.markdown(f"**Student · text decoder** · {sum(mask)}/{n_layers} modules · {'beam' if beam else 'greedy'}")
    st.code(main["text"] or "(empty transcript)", language=None, wrap_lines=True)
    if "whisper" in text_res and beam:
        st.caption("Greedy:")
        st.code(text_res["whisper"]["text"] or "(empty transcript)", language=None, wrap_lines=True)
    t_dec_score = score(reference, main["spoken"])
    rtf = main["rtf"]
    st.caption(f"Text decoder: {score_text(t_dec_score)} · latency {main['latency_ms']:.0f} ms "
               f"(RTF {f'{rtf:.3f}' if rtf >= 0.001 else '<0.001'}) · {main['mode']} input",
               help="Whisper's own text decoder reading this student's encoder output for the current mask "
                    "(greedy: the most likely token at each step; beam: 5 beams). WER / CER count its text in the "
                    "references' spelling (numbers as words), normalised like every transcript. Latency: the median "
                    f"of {main['latency_runs']} runs on this server of the encoder pass in the student's training "
                    "input mode (padded: a 30 s window; clip: the clip, then a cached padding tail) + the search.")
    if t_dec_score:
        st.html(diff.word_diff_html(t_dec_score["diff"]))


c_s, c_t = st.columns(2, gap="large")
with c_s:
    if has_text_decoder(student.model):
        transcript(f"**Student · CTC head** · {sum(mask)}/{n_layers} modules", s_text, res["text"], s_score,
                   f"CTC head: {score_text(s_score)}", "The encoder's CTC head, decoded as chosen above: the "
                   "transcript every other view of this page (posteriorgram, KL views, metrics) is about.")
        text_decoder_transcript()
    else:
        transcript(f"**Student** · {sum(mask)}/{n_layers} modules", s_text, res["text"], s_score)
with c_t:
    if t_res is not None:
        transcript("**Teacher** · full depth", t_text, t_res["text"], t_score)
    else:
        st.markdown("**Teacher**")
        st.caption("No teacher loaded.")
if not s_score:
    st.caption("Add a reference text to get WER / CER and the coloured word diff.")

spec = logmel(clip.digest, clip.samples)
st.plotly_chart(plots.spectrogram_posteriorgram(spec, 0.01, res["posteriors"], res["frame_sec"],
                                                student.config.vocab),
                key="spec_plot", config={"displaylogo": False}, theme=None)   # theme=None: keep its colour scale

# The KL views sit in a folding section that tracks its state: folded, the drop-one view (one extra forward
# per module) is not computed at all.
kl_section = st.expander("Per-layer KL to the teacher", expanded=True, key="kl_section", on_change="rerun",
                         icon=":material/stacked_line_chart:")
with kl_section:
    if kl_section.open is False:
        st.caption("Folded: the KL views are not computed.")
    else:
        k1, k2 = st.columns(2, gap="large")
        with k1:
            ref_name = "teacher" if res["reference"] == "teacher" else "student output"
            st.plotly_chart(plots.kl_heatmap(res["depth_kl"], res["frame_sec"],
                                             f"Depth view (logit lens): KL({ref_name} ‖ CTC head after module i)",
                                             module_names, active=mask), key="depth_plot",
                            config={"displaylogo": False})
        with k2:
            with st.spinner("Drop-one view…"):
                ref = t_res["log_probs"] if res["reference"] == "teacher" else res["log_probs"]
                try:
                    drop = drop_one_result(ckpt_key, clip.digest, mask,
                                           teacher_key if res["reference"] == "teacher" else None,
                                           student, clip.samples, ref)
                except (RuntimeError, ValueError) as exc:
                    drop = None
                    st.error(f"Drop-one view unavailable — {one_line(exc)}", icon=":material/error:")
            if drop is not None:
                st.plotly_chart(plots.kl_heatmap(drop, res["frame_sec"],
                                                 f"Drop-one view: KL({ref_name} ‖ current mask without module i)",
                                                 module_names, active=mask), key="drop_plot",
                                config={"displaylogo": False})
        st.caption("Hover a heatmap cell for layer, time and KL (nats). Modules that are off are marked “(off)”: "
                   "their drop-one row is blank, and in the depth view they pass the previous state through."
                   + ("" if res["reference"] == "teacher" else " Without a usable teacher the KL reference is the "
                      "student's own output for the current mask."))
