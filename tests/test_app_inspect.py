"""Inspect page (issue 15): folding KL section, spectrogram colours, word-diff legend, the "budget for k" line
only with a clip, and latency as a median of several runs with its real-time factor (timing in dld_core); an
encoder-decoder student's text-decoder transcript next to its CTC head's (issue 20)."""
from __future__ import annotations

import base64
import json
import re
import time
from html.parser import HTMLParser

import numpy as np
import pytest
import soundfile as sf
from streamlit.testing.v1 import AppTest

from tests import app_fixtures as fx
from tests.app_fixtures.apptest import (APP, TIMEOUT, env, seq2seq_env, seq2seq_world,  # noqa: F401  (fixtures:
                                        world)                                        # the shared test world)


def run_app() -> AppTest:
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.run()
    at.switch_page("app_pages/inspect.py").run()                 # the root opens How DLD works
    assert not at.exception, [e.message for e in at.exception]
    return at


def metric(at: AppTest, label: str) -> str:
    return next(m.value for m in at.metric if m.label == label)


def chart_specs(at: AppTest) -> list[dict]:
    return [json.loads(c.proto.spec) for c in at.get("plotly_chart")]


def chart_titles(spec: dict) -> str:
    layout = spec.get("layout", {})
    return " ".join([str(layout.get("title", {}).get("text", ""))]
                    + [str(a.get("text", "")) for a in layout.get("annotations", [])])


def plotly_array(value) -> np.ndarray:
    """Plotly JSON arrays: plain lists or typed arrays {"dtype", "bdata" (base64), "shape"}."""
    if isinstance(value, dict) and "bdata" in value:
        arr = np.frombuffer(base64.b64decode(value["bdata"]), dtype=np.dtype(value["dtype"]))
        shape = value.get("shape")
        if shape:
            arr = arr.reshape([int(s) for s in str(shape).split(",")])
        return arr.astype(np.float64)
    return np.asarray(value, dtype=np.float64)


def luminance(color: str) -> float:
    color = color.strip()
    if color.startswith("#"):
        r, g, b = (int(color[i:i + 2], 16) for i in (1, 3, 5))
    else:                                                         # rgb(r, g, b)
        r, g, b = (float(x) for x in re.findall(r"[\d.]+", color)[:3])
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


# ------------------------------------------------------------------------------------ 1. KL section folds
def test_kl_heatmaps_sit_in_a_folding_section_that_skips_drop_one_when_folded(env, monkeypatch):
    at = run_app()
    section = [e for e in at.expander if e.label == "Per-layer KL to the teacher"]
    assert len(section) == 1
    inside = section[0].get("plotly_chart")
    assert len(inside) == 2                                       # depth view + drop-one view, inside the section
    assert {c.proto.id for c in inside} <= {c.proto.id for c in at.get("plotly_chart")}
    assert len(at.get("plotly_chart")) == 3                       # + the spectrogram/posteriorgram outside

    from app.state import results
    calls = []
    real = results.drop_one_result
    monkeypatch.setattr(results, "drop_one_result", lambda *a, **k: calls.append(a) or real(*a, **k))
    at.session_state["kl_section"] = False                       # the user folds the section
    at.toggle(key="layer_1").set_value(False).run()               # ... and changes the mask
    assert not at.exception, [e.message for e in at.exception]
    assert len(at.get("plotly_chart")) == 1                       # only the spectrogram is drawn
    assert calls == []                                            # drop-one not computed while folded
    at.session_state["kl_section"] = True                        # unfolded again: computed for the new mask
    at.run()
    assert len(at.get("plotly_chart")) == 3 and len(calls) == 1


# -------------------------------------------------------------------------------- 2. spectrogram colours
def test_spectrogram_figure_maps_silence_to_the_darkest_colour():
    from app.views import plots
    rng = np.random.default_rng(0)
    logmel = rng.uniform(-2.0, 1.5, size=(120, 80)).astype(np.float32)
    logmel[:30] = -4.0                                            # leading silence: the minimum of the data
    fig = plots.spectrogram_posteriorgram(logmel, 0.01, np.full((30, 5), 0.2), 0.04, ["<blank>", " ", "a", "b", "c"])
    spec = fig.data[0]
    colors = [c for _, c in spec.colorscale]
    assert luminance(colors[0]) == min(luminance(c) for c in colors)   # first colour = darkest
    assert spec.zmin == pytest.approx(-4.0)                            # silence maps to the first colour
    assert spec.zmax == pytest.approx(float(np.asarray(spec.z).max()))


def test_spectrogram_chart_is_drawn_without_a_theme_that_overrides_its_colours(env):
    at = run_app()
    charts = at.get("plotly_chart")
    specs = chart_specs(at)
    idx = next(i for i, s in enumerate(specs) if "Log-mel spectrogram" in chart_titles(s))
    assert charts[idx].proto.theme == ""                          # theme=None: Streamlit's theme not applied
    heat = specs[idx]["data"][0]
    colors = [c for _, c in heat["colorscale"]]
    assert luminance(colors[0]) == min(luminance(c) for c in colors)
    z = plotly_array(heat["z"])
    assert heat["zmin"] == pytest.approx(float(np.nanmin(z)), abs=1e-3)   # the quietest cell gets the darkest colour


# ----------------------------------------------------------------------------------- 3. word-diff legend
class _Spans(HTMLParser):
    """(section, class, style, text) of every span; section is "diff" or "legend"."""

    def __init__(self):
        super().__init__()
        self.section, self.stack, self.spans = None, [], []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "div":
            self.section = {"dld-diff": "diff", "dld-legend": "legend"}.get(a.get("class", ""), self.section)
        if tag == "span":
            self.stack.append([self.section, a.get("class", ""), a.get("style", ""), ""])

    def handle_data(self, data):
        if self.stack:
            self.stack[-1][3] += data

    def handle_endtag(self, tag):
        if tag == "span" and self.stack:
            self.spans.append(tuple(self.stack.pop()))


def spans(html_text: str) -> list[tuple]:
    parser = _Spans()
    parser.feed(html_text)
    return parser.spans


def test_word_diff_legend_uses_the_colours_of_the_diff():
    from app.views import diff
    out = spans(diff.word_diff_html([("equal", "the", "the"), ("substitute", "quick", "quack"),
                                     ("insert", None, "very"), ("delete", "fox", None)]))
    legend = {text: (cls, style) for section, cls, style, text in out if section == "legend" and style}
    body = {cls: style for section, cls, style, _ in out if section == "diff"}
    for label, cls in (("correct", "eq"), ("substituted", "sub-hyp"), ("inserted", "ins"), ("deleted", "del")):
        assert legend[label][0] == cls
        assert legend[label][1] and legend[label][1] == body[cls], label   # same colours as the diff spans
    assert "background" in body["sub-hyp"] and body["sub-hyp"] != body["ins"] != body["del"]


def test_inspect_shows_the_diff_legend(env):
    at = run_app()
    html_bodies = [h.proto.body for h in at.html if "dld-diff" in h.proto.body]
    assert html_bodies
    for body in html_bodies:
        legend = [(cls, style, text) for section, cls, style, text in spans(body) if section == "legend"]
        labels = {text for _, _, text in legend}
        assert {"correct", "substituted", "inserted", "deleted"} <= labels
        shown = {cls: style for section, cls, style, _ in spans(body) if section == "diff"}
        for cls, style, _ in legend:
            if cls in shown:
                assert style == shown[cls]


# ------------------------------------------------------------------------------- 4. "budget for k" line
def budget_captions(at: AppTest) -> list[str]:
    return [c.value for c in at.caption if "budget for k" in c.value.lower()]


def test_budget_line_only_when_a_clip_is_loaded(env):
    at = run_app()                                                # a sample clip is loaded
    assert len(budget_captions(at)) == 1 and "GFLOPs on this clip" in budget_captions(at)[0]
    at.segmented_control(key="audio_source").set_value("Upload").run()   # no clip yet
    assert not at.exception
    assert budget_captions(at) == []
    at.file_uploader(key="upload").upload("clip.wav", fx.tone_wav(2.0, seed=7), "audio/wav").run()
    assert len(budget_captions(at)) == 1


# ------------------------------------------------------------------------------- 5. latency: median + RTF
def test_recognize_reports_the_median_of_repeated_forwards(tiny_model, monkeypatch):
    from dld_core.inference import real_time_factor, recognize
    wav = np.random.default_rng(0).standard_normal(16000).astype(np.float32) * 0.1
    once = recognize(tiny_model, [wav])
    assert len(once.forward_runs_ms) == 1 and once.forward_ms == once.forward_runs_ms[0]
    real_forward = tiny_model.forward
    delays = iter([0.25, 0.0, 0.0, 0.0, 0.0])                     # one slow outlier run

    def slow_forward(*args, **kwargs):
        time.sleep(next(delays))
        return real_forward(*args, **kwargs)

    monkeypatch.setattr(tiny_model, "forward", slow_forward)
    rep = recognize(tiny_model, [wav], repeats=5)
    assert len(rep.forward_runs_ms) == 5 and max(rep.forward_runs_ms) >= 250
    assert rep.forward_ms == pytest.approx(float(np.median(rep.forward_runs_ms)))
    assert rep.forward_ms < max(rep.forward_runs_ms)              # the outlier does not decide it
    assert rep.texts == once.texts                                 # same (eval-mode) output
    assert rep.decode_ms >= 0 and rep.compute_ms == pytest.approx(rep.forward_ms + rep.decode_ms)
    assert real_time_factor(500.0, 32000) == pytest.approx(0.25)  # 0.5 s of compute for 2 s of audio
    assert real_time_factor(10.0, 0) == float("inf")


def test_latency_metric_is_a_median_with_its_real_time_factor(env, monkeypatch):
    from app.state.results import LATENCY_REPEATS, student_result
    from dld_core import inference
    seen = []
    real = inference.recognize

    def spy(*args, **kwargs):
        result = real(*args, **kwargs)
        seen.append((kwargs.get("repeats", 1), result))
        return result

    monkeypatch.setattr(inference, "recognize", spy)
    student_result.clear()                                  # measure afresh (results are cached per server)
    at = run_app()
    latency = next(m for m in at.metric if m.label == "Latency")
    m = re.fullmatch(r"(\d+) ms · RTF (\d+\.\d{3}|<0\.001)", f"{latency.value} · {latency.proto.delta}")
    assert m, (latency.value, latency.proto.delta)
    timed = [r for repeats, r in seen if repeats > 1]
    assert timed and all(len(r.forward_runs_ms) == LATENCY_REPEATS >= 3 for r in timed)
    result = timed[-1]
    assert int(m.group(1)) == round(result.compute_ms)
    duration = sf.info(at.selectbox(key="sample_choice").value).duration
    rtf = result.compute_ms / 1000 / duration
    assert m.group(2) == (f"{rtf:.3f}" if rtf >= 0.001 else "<0.001")


# ---------------------------------------------------------------------- a student with protected modules
def test_a_student_trained_with_protected_modules_says_so(env, tmp_path, monkeypatch):
    import shutil
    from dld_core.checkpoint import load_checkpoint, save_checkpoint
    ckpts = tmp_path / "checkpoints"
    shutil.copytree(env["root"] / "checkpoints" / "teacher", ckpts / "teacher")
    dld = load_checkpoint(env["root"] / "checkpoints" / "dld")
    save_checkpoint(ckpts / "dld", dld.model, recipe="dld", metadata={"train": {"protected": "L1"}})
    monkeypatch.setenv("DLD_CHECKPOINTS_DIR", str(ckpts))
    at = run_app()
    assert any("Trained never to drop L1: masks without it are outside its training." in c.value
               for c in at.sidebar.caption)
    monkeypatch.setenv("DLD_CHECKPOINTS_DIR", str(env["root"] / "checkpoints"))   # the shipped-like students: none
    at = run_app()
    assert not any("Trained never to drop" in c.value for c in at.sidebar.caption)


def test_inspect_offers_the_current_mask_as_a_download(env):
    """"Download this model" under the layer strip, for the mask in front of the user; built only on request."""
    at = run_app()
    assert [e.label for e in at.expander if e.label == "Download this model"] == ["Download this model"]
    assert at.button(key="inspect_download_prepare").label == "Prepare download"
    at.toggle(key="layer_1").set_value(False).run()
    assert not at.exception
    assert at.button(key="inspect_download_prepare").label == "Prepare download"
    assert any("3 kept modules" in c.value for c in at.caption)


# ------------------------------------------------------------------------- an encoder-decoder student (issue 20)
TEXT_LINE = re.compile(r"Text decoder: WER \d+\.\d% · CER \d+\.\d% · latency \d+ ms \(RTF (\d+\.\d{3}|<0\.001)\) "
                       r"· clip input")


def test_an_encoder_decoder_student_shows_its_text_decoder_next_to_its_ctc_head(seq2seq_env, tmp_path, monkeypatch):
    """Both transcripts with WER / CER, the text decoder's latency in the checkpoint's own input mode ("clip"), the
    decoder transcript following the mask, beam when the decoder choice says so; cached per (clip, mask, decoder);
    the CTC views stay on the CTC head."""
    from app.state import results
    from dld_core import seq2seq
    from dld_core.decoder_params import DIR_ENV
    monkeypatch.setenv(DIR_ENV, str(tmp_path / "no-decoder-files"))       # the CTC beam: unavailable (greedy)
    calls = []
    real = seq2seq.timed_transcript
    monkeypatch.setattr(seq2seq, "timed_transcript",
                        lambda *a, **k: calls.append((tuple(a[2]), a[3], a[4])) or real(*a, **k))
    results.text_decoder_result.clear()
    at = run_app()
    titles = [m.value for m in at.markdown]
    assert "**Student · CTC head** · 4/4 modules" in titles
    assert "**Student · text decoder** · 4/4 modules · greedy" in titles
    _, full, _ = [c.value for c in at.code]                                # CTC head, text decoder, teacher
    captions = [c.value for c in at.caption]
    assert any(re.fullmatch(r"CTC head: WER \d+\.\d% · CER \d+\.\d%", c) for c in captions), captions
    assert sum(bool(TEXT_LINE.fullmatch(c)) for c in captions) == 1, captions
    assert "Latency, WER and CER above are the student's CTC head's; its text decoder's are under the text decoder's " \
           "transcript below." in captions                                  # the metric row is the CTC head's
    assert calls == [((True,) * 4, "whisper", "clip")]
    assert len(at.get("plotly_chart")) == 3                                # posteriorgram + both KL views (CTC)

    at.toggle(key="layer_1").set_value(False).run()                        # M1 off
    assert not at.exception, [e.message for e in at.exception]
    assert "**Student · text decoder** · 3/4 modules · greedy" in [m.value for m in at.markdown]
    assert at.code[1].value != full                                         # the decoder follows the mask
    assert calls[-1] == ((True, False, True, True), "whisper", "clip")
    at.toggle(key="layer_1").set_value(True).run()
    assert at.code[1].value == full and len(calls) == 2                     # cached: no third run

    at.segmented_control(key="decoder").set_value("both").run()
    assert not at.exception, [e.message for e in at.exception]
    assert "**Student · text decoder** · 4/4 modules · beam" in [m.value for m in at.markdown]
    assert calls[2:] == [((True,) * 4, "whisper-beam", "clip")]              # the greedy one is cached
    assert at.code[2].value == full                                          # "Both": greedy under the beam text
    assert any("text decoder's beam search needs no LM" in c.value for c in at.caption)


def test_a_ctc_only_student_shows_no_text_decoder(env):
    at = run_app()
    assert any(m.value.startswith("**Student** · ") for m in at.markdown)
    assert not any("text decoder" in m.value or "CTC head" in m.value for m in at.markdown)
    assert not any(c.value.startswith(("Text decoder:", "CTC head:")) or "CTC head's" in c.value for c in at.caption)
    assert len(at.code) == 2


def test_a_text_decoder_failure_is_one_line_and_leaves_the_ctc_views(seq2seq_env, monkeypatch):
    from app.state import results
    from dld_core import seq2seq

    def fail(*args, **kwargs):
        raise RuntimeError("out of memory\ntraceback lines")

    monkeypatch.setattr(seq2seq, "timed_transcript", fail)
    results.text_decoder_result.clear()
    at = run_app()
    assert [e.value for e in at.error] == ["The text decoder cannot run on this clip — out of memory"]
    assert "**Student · CTC head** · 4/4 modules" in [m.value for m in at.markdown]
    assert len(at.code) == 2 and len(at.get("plotly_chart")) == 3           # CTC head and teacher; CTC views
