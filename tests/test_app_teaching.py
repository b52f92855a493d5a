"""AppTests of the teaching parts of the studio (issue 15, "for a teacher in a classroom"): the How DLD works
page (plain words, the live gated-encoder picture, the three-step story), validation WER in the model
pickers, help texts on Inspect's metrics, human names for sample clips, and the app root opening Inspect."""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from dld_core import masks
from tests.app_fixtures.apptest import APP, TIMEOUT, env, no_exceptions, world  # noqa: F401  (env, world: the shared test world)
from tests.helpers import REPO

HOW = "app_pages/how_dld_works.py"


def run_app(page: str | None = "app_pages/inspect.py") -> AppTest:
    """The app on a page (None: what "/" opens)."""
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.run()
    if page:
        at.switch_page(page).run()
    return at


def metric(at: AppTest, label: str):
    return next(m for m in at.metric if m.label == label)


def all_text(at: AppTest) -> str:
    return "\n".join([m.value for m in at.markdown] + [c.value for c in at.caption])


def diagram(at: AppTest) -> str:
    return next(h.proto.body for h in at.html if "dld-encoder" in h.proto.body)


def copy_checkpoints(env, tmp_path, names) -> Path:
    root = tmp_path / "ckpts"
    for name in names:
        shutil.copytree(env["root"] / "checkpoints" / name, root / name)
    return root


# ------------------------------------------------------------------------------------ How DLD works
def test_the_app_root_opens_how_dld_works_which_sends_each_audience_on(env):
    """Issue 22: "/" opens How DLD works (a page with its own /how-it-works URL, reached from a hidden start
    page), not Inspect: a newcomer lands on the idea, and each audience finds a link to its page."""
    at = run_app(None)
    no_exceptions(at)
    assert [t.value for t in at.title] == ["How DLD works"]
    links = {link.proto.label: link.proto.page for link in at.get("page_link")}
    for label in ("Inspect", "Budgets", "Layer importance", "Train"):
        assert any(label in text for text in links), links


def test_how_page_explains_teacher_ld_dld_and_the_glossary(env):
    at = run_app(HOW)
    no_exceptions(at)
    assert not at.error, [e.value for e in at.error]
    assert [t.value for t in at.title] == ["How DLD works"]
    text = all_text(at)
    for words in ("#### Teacher", "trained the usual way", "frozen", "#### LD", "random modules are switched off",
                  "CTC loss", "#### DLD", "KL(teacher ‖ student)", "degrades gracefully"):
        assert words in text, words
    for term in ("**Module**", "**Mask**", "**KL (nats)**", "**Logit lens**", "**Posteriorgram**", "**WER / CER**",
                 "**WER can exceed 100%**", "**Pareto front**", "**GFLOPs**"):
        assert term in text, term


def test_the_encoder_picture_follows_the_mask_and_counts_the_compute(env):
    at = run_app(HOW)
    html = diagram(at)
    assert [m for m in re.findall(r">(L\d)<", html)] == ["L1", "L2", "L3", "L4"]     # labels = module names
    assert html.count("dld-runs") == 4 and "dld-skipped" not in html
    assert ">CTC head<br>→ text<" in html and "text decoder" not in html            # a CTC teacher and student
    assert metric(at, "Modules that run").value == "4/4"
    full = float(metric(at, "GFLOPs for a 10 s clip").value)
    assert metric(at, "Compute saved").value == "0%"

    at.pills(key="how_modules").set_value(["L1", "L3"]).run()
    no_exceptions(at)
    html = diagram(at)
    assert html.count("dld-runs") == 2 and html.count("dld-skipped") == 2
    assert re.search(r"L2: [^']*skipped", html) and re.search(r"L3: [^']*runs", html)
    assert metric(at, "Modules that run").value == "2/4"
    half = float(metric(at, "GFLOPs for a 10 s clip").value)
    assert 0 < half < full
    from app.state.checkpoints import get_checkpoint
    from app.state.results import gflops_for
    teacher = get_checkpoint(env["ckpts"]["teacher"])
    expected = 100 * (1 - gflops_for(teacher, 10.0, (True, False, True, False))
                      / gflops_for(teacher, 10.0, (True,) * 4))
    assert metric(at, "Compute saved").value == f"{expected:.0f}%" != "0%"


def test_the_picture_starts_from_the_inspect_mask(env):
    at = run_app()
    at.toggle(key="layer_0").set_value(False).run()
    at.switch_page(HOW).run()
    no_exceptions(at)
    assert at.pills(key="how_modules").value == ["L2", "L3", "L4"]
    assert metric(at, "Modules that run").value == "3/4"


def teacher_transcript(path: Path, wav: Path) -> str:
    from dld_core.audio import load_audio
    from dld_core.checkpoint import load_checkpoint
    from dld_core.inference import recognize
    model = load_checkpoint(path).model.eval()
    return recognize(model, [load_audio(str(wav)).samples]).texts[0]


def test_the_story_runs_the_clip_and_half_mask_that_show_the_point(env):
    """Issue 22: the story's clip and half mask come from dld_core.story.choose_story (the multi-word clip and
    half mask on which the DLD student beats the static teacher most clearly), and step ③ shows CER beside
    WER; steps ② and ③ run the same mask through the cached result paths."""
    from dld_core.audio import load_audio, load_manifest
    from dld_core.checkpoint import load_checkpoint
    from dld_core.story import choose_story
    rows = load_manifest(env["manifest"])
    teacher = load_checkpoint(env["ckpts"]["teacher"]).model.eval()
    dld = load_checkpoint(env["ckpts"]["dld"]).model.eval()
    found = choose_story(teacher, dld, [(load_audio(r["audio_filepath"]).samples, r["text"]) for r in rows])
    assert found is not None                                  # the tiny random world has such a clip and mask
    reference = rows[found["clip"]]["text"]
    half = masks.describe(found["active"], ["L1", "L2", "L3", "L4"])

    at = run_app(HOW)
    no_exceptions(at)
    assert any(c.value.startswith(f"Reference: “{reference}”") for c in at.caption)
    assert at.code[0].value == (found["teacher_full"]["text"] or "(empty transcript)")
    at.segmented_control(key="story_step").set_value(2).run()
    no_exceptions(at)
    assert any(m.value == f"**Teacher** · {half}" for m in at.markdown)
    assert at.code[0].value == (found["teacher_half"]["text"] or "(empty transcript)")
    assert at.pills(key="how_modules").value == [f"L{i + 1}" for i in found["active"]]   # the picture: the step's mask
    at.segmented_control(key="story_step").set_value(3).run()
    no_exceptions(at)
    assert any(m.value == f"**DLD student** · {half}" for m in at.markdown)
    assert at.code[0].value == (found["student_half"]["text"] or "(empty transcript)")
    assert metric(at, "WER").value == f"{100 * found['student_half']['wer']:.0f}%"
    assert metric(at, "CER").value == f"{100 * found['student_half']['cer']:.0f}%"
    assert metric(at, "WER at step ②").proto.delta == f"CER {100 * found['teacher_half']['cer']:.0f}%"
    assert [m.label for m in at.metric if m.label.startswith("WER at step")] == [
        "WER at step ①", "WER at step ②", "WER at step ③"]


def test_without_a_story_clip_it_falls_back_to_the_clip_the_teacher_gets_right(env, tmp_path, monkeypatch):
    """When no clip shows the point (choose_story: None), the story takes the sample with the lowest full-depth
    teacher WER and the DLD student's best half mask on it (closest to the teacher), for both models."""
    import dld_core.story
    monkeypatch.setattr(dld_core.story, "choose_story", lambda *a, **k: None)
    samples = tmp_path / "samples"
    shutil.copytree(env["root"] / "samples", samples)
    rows = [json.loads(line) for line in (samples / "manifest.jsonl").read_text().splitlines()]
    right = teacher_transcript(env["ckpts"]["teacher"], samples / rows[1]["audio_filepath"])
    assert right.strip()
    rows[1]["text"] = right
    (samples / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    monkeypatch.setenv("DLD_SAMPLES_DIR", str(samples))

    at = run_app(HOW)
    no_exceptions(at)
    assert any(m.value.startswith("**Clip:**") and right in m.value for m in at.markdown)
    assert any(m.value == "**Teacher** · all 4 modules" for m in at.markdown)
    assert at.code[0].value == right
    assert metric(at, "WER").value == "0%" == metric(at, "WER at step ①").value

    from dld_core.audio import load_audio
    from dld_core.checkpoint import load_checkpoint
    from dld_core.inference import recognize
    from dld_core.layers import best_mask_for_budget
    wav = load_audio(str(samples / rows[1]["audio_filepath"])).samples
    dld = load_checkpoint(env["ckpts"]["dld"]).model.eval()
    t_lp = recognize(load_checkpoint(env["ckpts"]["teacher"]).model.eval(), [wav]).log_probs().float()
    kept = best_mask_for_budget(dld, t_lp, [(wav, right)], kept=2)["active"]
    names = ["L1", "L2", "L3", "L4"]
    half = masks.describe(kept, names)
    at.segmented_control(key="story_step").set_value(2).run()
    no_exceptions(at)
    assert any(m.value == f"**Teacher** · {half}" for m in at.markdown)
    assert at.code[0].value != right                                     # the static teacher, half its modules
    assert at.pills(key="how_modules").value == [names[i] for i in kept]  # the picture shows the step's mask
    assert metric(at, "WER at step ②").value == metric(at, "WER").value != "0%"

    at.segmented_control(key="story_step").set_value(3).run()
    no_exceptions(at)
    assert any(m.value == f"**DLD student** · {half}" for m in at.markdown)
    own = recognize(dld, [wav], active=list(masks.as_bools(kept, 4))).texts[0]
    assert at.code[0].value == (own or "(empty transcript)")           # the DLD student, same half mask


def test_without_a_dld_student_the_story_says_so_in_one_line(env, tmp_path, monkeypatch):
    monkeypatch.setenv("DLD_CHECKPOINTS_DIR", str(copy_checkpoints(env, tmp_path, ["teacher", "ld"])))
    at = run_app(HOW)
    no_exceptions(at)
    assert not at.error
    notes = [i.value for i in at.info if "No DLD student" in i.value]
    assert len(notes) == 1 and "\n" not in notes[0]
    at.segmented_control(key="story_step").set_value(3).run()
    no_exceptions(at)
    assert any("Step ③ needs a DLD student" in c.value for c in at.caption)


def test_without_checkpoints_the_page_explains_and_shows_one_error(env, tmp_path, monkeypatch):
    empty = tmp_path / "none"
    empty.mkdir()
    monkeypatch.setenv("DLD_CHECKPOINTS_DIR", str(empty))
    at = run_app(HOW)
    no_exceptions(at)
    assert "#### DLD" in all_text(at)                                      # the explanation still shows
    assert len(at.error) == 2 and all("\n" not in e.value for e in at.error)
    assert "No teacher or DLD checkpoint found" in at.error[0].value


def test_a_best_dld_student_is_used_when_checkpoints_dld_is_missing(env, tmp_path, monkeypatch):
    root = copy_checkpoints(env, tmp_path, ["teacher"])
    for name, wer in (("dld_a", 0.4), ("dld_b", 0.2)):
        shutil.copytree(env["root"] / "checkpoints" / "dld", root / name)
        (root / name / "metrics.json").write_text(json.dumps({"best_valid_wer": wer}))
    monkeypatch.setenv("DLD_CHECKPOINTS_DIR", str(root))
    at = run_app(HOW)
    at.segmented_control(key="story_step").set_value(3).run()
    no_exceptions(at)
    assert not any("No DLD student" in i.value for i in at.info)
    assert any(m.value.startswith("**DLD student**") for m in at.markdown)
    assert any(c.value.endswith("model: dld_b · DLD · valid WER 20.0%") for c in at.caption), \
        [c.value for c in at.caption]                                   # the lower validation WER wins


# ---------------------------------------------------------------- How DLD works with an encoder-decoder student
@pytest.fixture(scope="module")
def text_world(tmp_path_factory):
    """make_text_story_checkpoints (an encoder-decoder DLD student, the tiny pretrained Whisper it started from, a
    CTC teacher) and sample clips whose first reference is the student's own transcript with one half mask."""
    from tests.app_fixtures import make_text_story_checkpoints, make_text_story_samples
    root = tmp_path_factory.mktemp("text_story")
    ckpts = make_text_story_checkpoints(root)
    manifest, active = make_text_story_samples(ckpts, root / "samples")
    return {"root": root, "ckpts": ckpts, "manifest": manifest, "active": active}


@pytest.fixture
def text_env(env, text_world, monkeypatch):
    monkeypatch.setenv("DLD_CHECKPOINTS_DIR", str(text_world["root"] / "checkpoints"))
    monkeypatch.setenv("DLD_SAMPLES_DIR", str(text_world["manifest"].parent))
    return {**env, **text_world}


def test_an_encoder_decoder_student_s_story_is_told_by_text_decoders(text_env):
    """The default student has a text decoder: the story compares, through the text decoders (greedy, the student's
    clip input), the unchanged pretrained Whisper it was distilled from at full depth, that Whisper with the story's
    half mask, and the student with it (dld_core.story.choose_text_story); the cards, picture and captions say so."""
    from dld_core import seq2seq
    from dld_core.audio import load_audio, load_manifest
    from dld_core.checkpoint import load_checkpoint
    from dld_core.families.whisper_decoding import WhisperSeq2Seq
    from dld_core.story import choose_text_story, pretrained_whisper
    folder = text_env["ckpts"]["pretrained"]
    rows = load_manifest(text_env["manifest"])
    clips = [(load_audio(r["audio_filepath"]).samples, r["text"]) for r in rows]
    student = load_checkpoint(text_env["ckpts"]["dld"]).model.eval()
    found = choose_text_story(student, pretrained_whisper(str(folder)), clips, mode="clip")
    assert found is not None and (found["clip"], found["active"]) == (0, text_env["active"])
    names = ["A1", "M1", "A2", "M2"]
    half = masks.describe(found["active"], names)
    whisper = f"Whisper ({folder.name})"

    at = run_app(HOW)
    no_exceptions(at)
    assert not at.error, [e.value for e in at.error]
    text = all_text(at)
    for words in (f"**{whisper}, unchanged**", "**text decoder**", "cross-entropy on the reference's tokens",
                  f"the full-depth {whisper}'s next-token probabilities", "degrades gracefully",
                  f"The encoder of {whisper} and of the DLD student · 4 gated modules",
                  "written by a text decoder (greedy, the student's clip input)"):
        assert words in text, words
    assert "(the CTC loss)" not in text and "the full-depth teacher's output" not in text   # the CTC student's words
    html = diagram(at)
    assert ">text decoder<br>→ text<" in html and "CTC head" not in html
    assert "text decoder" in next(m for m in at.metric if m.label == "GFLOPs for a 10 s clip").proto.help

    how = "text decoder, greedy, clip input"
    assert any(m.value == f"**Teacher · {whisper}, unchanged** · all 4 modules" for m in at.markdown)
    wav = clips[0][0]
    options = seq2seq.decode_options("whisper")
    unchanged = WhisperSeq2Seq.from_pretrained(str(folder))
    assert at.code[0].value == unchanged.transcribe([wav], None, "clip", options)[0].text == found["teacher_full"]["text"]
    assert any(c.value == f"Reference: “{rows[0]['text']}” · model: {whisper}, unchanged (pretrained) · {how}"
               for c in at.caption)

    at.segmented_control(key="story_step").set_value(2).run()
    no_exceptions(at)
    assert any(m.value == f"**Teacher · {whisper}, unchanged** · {half}" for m in at.markdown)
    assert at.code[0].value == unchanged.transcribe([wav], found["active"], "clip", options)[0].text
    assert at.pills(key="how_modules").value == [names[i] for i in found["active"]]   # the picture: the step's mask
    assert "the DLD student is furthest ahead of the teacher" in all_text(at)

    at.segmented_control(key="story_step").set_value(3).run()
    no_exceptions(at)
    assert any(m.value == f"**DLD student** · {half}" for m in at.markdown)
    own = seq2seq.text_transcriber(student, "whisper", "clip")([wav], found["active"])[0]
    assert at.code[0].value == own == found["student_half"]["text"]                  # its text decoder, not its CTC head
    assert any(c.value.endswith(f"model: dld · DLD · {how}") for c in at.caption), [c.value for c in at.caption]
    assert metric(at, "WER").value == "0%" == f"{100 * found['student_half']['wer']:.0f}%"
    assert metric(at, "WER at step ②").value == f"{100 * found['teacher_half']['wer']:.0f}%" != "0%"
    assert metric(at, "WER at step ②").proto.delta == f"CER {100 * found['teacher_half']['cer']:.0f}%"


def test_a_text_story_without_the_student_ahead_says_so(text_env, monkeypatch):
    """When no sample and half mask show the student ahead, the page tells the closest pair as that."""
    import streamlit as st

    import dld_core.story
    real = dld_core.story.choose_text_story
    calls = []

    def not_ahead(*args, **kwargs):
        calls.append(kwargs.get("fallback"))
        return {**real(*args, **kwargs), "student_ahead": False}

    monkeypatch.setattr(dld_core.story, "choose_text_story", not_ahead)
    st.cache_data.clear()                                    # the story of this world may be cached already
    try:
        at = run_app(HOW)
        at.segmented_control(key="story_step").set_value(2).run()
    finally:
        st.cache_data.clear()
    no_exceptions(at)
    assert calls == [True]
    text = all_text(at)
    assert "the DLD student comes closest to the teacher: on these clips it is not ahead" in text
    assert "furthest ahead" not in text


def test_a_pretrained_whisper_that_cannot_be_read_is_one_line(text_env, monkeypatch):
    import dld_core.story
    from app.state.checkpoints import get_pretrained_whisper
    from dld_core.safe_io import CheckpointError

    def unreadable(source):
        raise CheckpointError(f"{source}/model.bin: not found\nmore lines")

    monkeypatch.setattr(dld_core.story, "pretrained_whisper", unreadable)
    get_pretrained_whisper.clear()
    try:
        at = run_app(HOW)
    finally:
        get_pretrained_whisper.clear()
    no_exceptions(at)
    folder = text_env["ckpts"]["pretrained"]
    assert [e.value for e in at.error] == [
        f"The story compares the DLD student with Whisper ({folder.name}), unchanged ({folder}), which cannot be "
        f"loaded here — {folder}/model.bin: not found"]


# ------------------------------------------------------------------------------ validation WER in pickers
def test_model_pickers_show_each_models_validation_wer(env, tmp_path, monkeypatch):
    root = copy_checkpoints(env, tmp_path, ["dld", "ld", "teacher"])
    (root / "dld" / "metrics.json").write_text(json.dumps({"best_valid_wer": 0.1234, "history": []}))
    (root / "teacher" / "metrics.json").write_text(json.dumps({"best_valid_wer": 0.05}))
    monkeypatch.setenv("DLD_CHECKPOINTS_DIR", str(root))
    at = run_app()
    no_exceptions(at)
    students = at.selectbox(key="student_ckpt").options
    assert any(o.startswith("dld") and o.endswith("· valid WER 12.3%") for o in students), students
    assert any(o.startswith("ld") and "valid WER" not in o for o in students), students     # none recorded
    assert any(o.endswith("· valid WER 5.0%") for o in at.selectbox(key="teacher_ckpt").options)
    assert "valid WER" in at.selectbox(key="student_ckpt").help


# ----------------------------------------------------------------------------------- Inspect metric help
def test_every_inspect_metric_has_a_help_text(env):
    at = run_app()
    no_exceptions(at)
    helps = {m.label: m.proto.help for m in at.metric}
    for label in ("GFLOPs (mask)", "Modules on", "Latency", "WER", "CER"):
        assert len(helps.get(label, "")) > 40, (label, helps.get(label))
    assert "exceed 100%" in helps["WER"] and "inserted" in helps["WER"]
    assert "billions" in helps["GFLOPs (mask)"] and "RTF" in helps["Latency"]


# ---------------------------------------------------------------------------------- sample clip names
def test_data_samples_have_human_names_and_whole_sentences():
    from app.state.clip_names import sample_label, sample_title
    rows = [json.loads(line) for line in (REPO / "data_samples" / "manifest.jsonl").read_text().splitlines()]
    for row in rows:
        label = sample_label(row)
        assert label.startswith(row["title"]) and row["text"] in label and "…" not in label
        assert Path(row["audio_filepath"]).stem not in label and ".wav" not in label
        assert "CC BY" not in label and "augmented" not in label                 # no licence text, no effect ids
        assert row["source"].split(",")[0].split(" (")[0] not in label                 # no voice id ("flite:kal16")
        assert sample_title({k: v for k, v in row.items() if k != "title"}) == row["title"]   # same when derived
    labels = [sample_label(r) for r in rows]
    assert "Synthetic voice (Flite, Kal) — “and god said let there be light” · 2.3 s" in labels
    assert "Recorded digit: zero (speaker Nicolas) · 0.4 s" in labels


def test_the_inspect_sample_picker_shows_human_names(env, tmp_path, monkeypatch):
    samples = tmp_path / "samples"
    shutil.copytree(env["root"] / "samples", samples)
    long_text = "the party is on the twenty first of may and everyone from the village is invited to come"
    rows = [{"audio_filepath": "clips/sample_0.wav", "text": long_text, "duration": 1.5,
             "source": "festival:cmu_us_slt_arctic_hts, augmented: reverb(rt60=0.45s)"},
            {"audio_filepath": "clips/sample_1.wav", "text": "zero", "duration": 2.0,
             "source": "FSDD nicolas (real speech; Free Spoken Digit Dataset (FSDD), Z. Jackson et al., CC BY-SA 4.0)"},
            {"audio_filepath": "clips/sample_2.wav", "text": "seven", "duration": 2.5, "source": "flite:kal16",
             "title": "My own name for it"}]
    (samples / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    monkeypatch.setenv("DLD_SAMPLES_DIR", str(samples))
    at = run_app()
    no_exceptions(at)
    assert at.selectbox(key="sample_choice").options == [
        f"Synthetic voice (Festival, SLT), in a reverberant room — “{long_text}” · 1.5 s",
        "Recorded digit: zero (speaker Nicolas) · 2.0 s",
        "My own name for it — “seven” · 2.5 s"]


def test_the_valid_wer_shown_is_the_kept_models_full_depth_wer():
    """A student's best_valid_wer is the mean over its validation masks; pickers show the kept epoch's
    full-depth WER instead (a teacher's best_valid_wer is already full depth)."""
    from app.state.checkpoints import metrics_valid_wer
    student = {"best_valid_wer": 0.85, "history": [
        {"epoch": 1, "valid_wer": 0.80, "valid_wer_masks": [0.80, 1.00]},
        {"epoch": 2, "valid_wer": 0.70, "valid_wer_masks": [0.70, 1.00]},      # kept: mean 0.85
        {"epoch": 3, "valid_wer": 0.69, "valid_wer_masks": [0.69, 1.02]}]}
    assert metrics_valid_wer(student) == 0.70
    assert metrics_valid_wer({"best_valid_wer": 0.55, "history": [{"valid_wer": 0.55, "valid_wer_masks": [0.55]}]}) == 0.55
    assert metrics_valid_wer({"best_valid_wer": 0.3}) == 0.3 and metrics_valid_wer({"wer": 0.4}) == 0.4
    assert metrics_valid_wer({}) is None and metrics_valid_wer({"best_valid_wer": True}) is None
