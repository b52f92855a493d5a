"""The shipped models keep the app's demos honest (issue 22): the teaching story's step ③ (the DLD student at
half depth) beats step ② (the static teacher with the same half) in WER and CER on a multi-word clip, and
every mask preset except an explicit "only k" gives a usable transcript (WER < 95%) on some sample clip.
A checkpoint that breaks either fails here rather than in a classroom."""
from __future__ import annotations

import os

import pytest

from dld_core import masks
from tests.helpers import REPO

CKPTS = REPO / "checkpoints"
SAMPLES = REPO / "data_samples" / "manifest.jsonl"
USABLE = 0.95
ENV_KEYS = ("DLD_CHECKPOINTS_DIR", "DLD_SAMPLES_DIR", "DLD_JOBS_DIR", "DLD_RESULTS_DIR", "DLD_CORPUS_DIR")

pytestmark = pytest.mark.skipif(not all((CKPTS / m / "model.safetensors").is_file() for m in ("teacher", "dld"))
                                or not SAMPLES.is_file(), reason="the shipped checkpoints or sample clips are missing")


@pytest.fixture(scope="module")
def shipped():
    from dld_core.audio import load_audio, load_manifest
    from dld_core.checkpoint import load_checkpoint
    teacher = load_checkpoint(CKPTS / "teacher").model.eval()
    dld = load_checkpoint(CKPTS / "dld").model.eval()
    clips = [(load_audio(r["audio_filepath"]).samples, r["text"]) for r in load_manifest(SAMPLES)]
    return teacher, dld, clips


@pytest.fixture
def repo_env(monkeypatch, tmp_path):
    """The app on the shipped checkpoints and sample clips (jobs in a temp folder)."""
    for key in ENV_KEYS:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("DLD_JOBS_DIR", str(tmp_path / "jobs"))


def test_the_story_shows_the_student_ahead_of_the_teacher(shipped):
    from dld_core.inference import recognize
    from dld_core.metrics import cer, wer
    from dld_core.story import choose_story

    teacher, dld, clips = shipped
    found = choose_story(teacher, dld, clips)
    assert found is not None, "no sample clip shows the DLD student ahead of the teacher at half depth"
    assert len(found["reference"].split()) >= 3                               # a sentence, not one digit
    assert sum(found["active"]) and len(found["active"]) == dld.num_modules // 2
    two, three = found["teacher_half"], found["student_half"]
    assert three["wer"] < two["wer"] and three["cer"] < two["cer"]
    wav, text = clips[found["clip"]]                                          # the numbers are the models' own
    active = masks.as_bools(found["active"], dld.num_modules)
    hyp = recognize(dld, [wav], active=active).texts[0]
    assert (wer(text, hyp), cer(text, hyp)) == (three["wer"], three["cer"])


S2S = CKPTS / "s2s_dld"         # the encoder-decoder DLD student (dld_core.seq2seq), when shipped


@pytest.mark.skipif(not (S2S / "model.safetensors").is_file(), reason="no encoder-decoder student is shipped")
def test_the_text_story_shows_the_encoder_decoder_student_ahead_of_its_pretrained_whisper(shipped):
    """How DLD works with an encoder-decoder default student (dld_core.story.choose_text_story): through the text
    decoders (greedy, the student's input mode, masks keeping its protected modules), the student at half depth
    beats the unchanged pretrained Whisper it was distilled from with the same half, on a multi-word clip that
    Whisper gets (nearly) right at full depth."""
    from dld_core import seq2seq
    from dld_core.checkpoint import load_checkpoint
    from dld_core.story import choose_text_story, pretrained_source, pretrained_whisper

    _, _, clips = shipped
    ckpt = load_checkpoint(S2S)
    student, mode = ckpt.model.eval(), seq2seq.input_mode_of(ckpt.info)
    found = choose_text_story(student, pretrained_whisper(pretrained_source(ckpt.info)), clips, mode=mode,
                              protected=ckpt.protected)
    assert found is not None, "no sample clip shows the encoder-decoder student ahead of its pretrained Whisper"
    assert len(found["reference"].split()) >= 3 and found["teacher_full"]["wer"] <= 0.2
    assert set(masks.kept(ckpt.protected, student.num_modules)) <= set(found["active"])
    assert len(found["active"]) == student.num_modules // 2
    two, three = found["teacher_half"], found["student_half"]
    assert three["wer"] < two["wer"] and three["cer"] < two["cer"]
    wav, _ = clips[found["clip"]]                                              # the numbers are the model's own
    assert seq2seq.text_transcriber(student, "whisper", mode)([wav], found["active"])[0] == three["text"]


def test_every_preset_but_only_k_is_usable_on_some_clip(shipped):
    """The layer strip's presets at its default k (half the modules) on the DLD student, clip by clip; "Best k"
    scores its candidates on the clip against the teacher, as Inspect does."""
    from dld_core.inference import recognize
    from dld_core.layers import best_mask_for_budget
    from dld_core.metrics import wer

    from dld_core.checkpoint import load_checkpoint
    teacher, dld, clips = shipped
    n, blocks, protected = dld.num_modules, dld.config.module_blocks, load_checkpoint(CKPTS / "dld").protected
    k = max(1, n // 2)
    every_other = masks.preset("every_other", n, k, blocks=blocks, protected=protected)
    assert [dld.module_names[i] for i in masks.kept(every_other, n)] == ["A1", "M1", "A3", "M3"]   # whole blocks, A1
    worst = {}
    for key, preset in masks.PRESETS.items():
        if preset.explicit:
            continue
        wers = []
        for wav, text in clips:
            def choose(kk, wav=wav, text=text):
                t_lp = recognize(teacher, [wav]).log_probs().float()
                return best_mask_for_budget(dld, t_lp, [(wav, text)], kept=kk)["active"]
            mask = masks.preset(key, n, k, blocks=blocks, choose=choose, protected=protected)
            wers.append(wer(text, recognize(dld, [wav], active=mask).texts[0]))
        worst[key] = min(wers)
    assert set(worst) == {"all", "every_other", "first_k", "best_k"}
    assert all(w < USABLE for w in worst.values()), worst


# ------------------------------------------------------------------------------------------ in the app
def test_the_how_page_story_on_the_shipped_models(repo_env):
    from streamlit.testing.v1 import AppTest
    from tests.app_fixtures.apptest import APP, TIMEOUT, no_exceptions

    at = AppTest.from_file(APP, default_timeout=TIMEOUT * 3)
    at.run()
    at.switch_page("app_pages/how_dld_works.py").run()
    no_exceptions(at)
    at.segmented_control(key="story_step").set_value(3).run()
    no_exceptions(at)

    def rate(label: str) -> float:
        m = next(m for m in at.metric if m.label == label)
        return float(m.value.rstrip("%")), float(m.proto.delta.removeprefix("CER ").rstrip("%"))

    wer2, cer2 = rate("WER at step ②")
    wer3, cer3 = rate("WER at step ③")
    assert wer3 < wer2 and cer3 < cer2, (wer2, cer2, wer3, cer3)
    assert next(m for m in at.metric if m.label == "CER").value == f"{cer3:.0f}%"   # CER beside WER
    reference = next(c.value for c in at.caption if c.value.startswith("Reference:"))
    assert len(reference.split("“")[1].split("”")[0].split()) >= 3          # a multi-word clip


def test_the_every_2nd_preset_keeps_whole_blocks_in_inspect(repo_env):
    from streamlit.testing.v1 import AppTest
    from tests.app_fixtures.apptest import APP, TIMEOUT, no_exceptions

    at = AppTest.from_file(APP, default_timeout=TIMEOUT * 3)
    at.run()
    at.switch_page("app_pages/inspect.py").run()
    no_exceptions(at)
    button = next(b for b in at.button if b.key == "preset_every_other")
    assert button.label == "Every 2nd block"
    button.click().run()
    no_exceptions(at)
    # the student was trained never to drop A1: every second block from the first, A1 M1 A3 M3
    assert at.session_state["mask"] == (True, True, False, False, True, True, False, False)
    wer_now = next(m for m in at.metric if m.label == "WER").value
    assert float(wer_now.rstrip("%")) < 100 * USABLE


def test_the_budgets_card_on_the_shipped_dld(repo_env):
    """The card's numbers are those of its own mask (results/budget_masks/dld.json: chosen on the validation
    set, measured on the synthetic test set); at the lowest budget no usable model fits."""
    import json

    from streamlit.testing.v1 import AppTest

    from dld_core.recommend import find_evaluation, recommend
    from tests.app_fixtures.apptest import APP, TIMEOUT, no_exceptions

    report = json.loads((REPO / "results" / "budget_masks" / "dld.json").read_text())
    at = AppTest.from_file(APP, default_timeout=TIMEOUT * 3)
    at.run()
    at.switch_page("app_pages/budgets.py").run()
    no_exceptions(at)
    assert at.selectbox(key="budget_target").value == "DLD (dld)"
    assert (at.selectbox(key="budget_set").value, at.radio(key="budget_decoder").value) == ("test.jsonl", "beam")
    budget = at.slider(key="budget_gflops").value
    best = recommend(report["masks"], budget)
    ev = find_evaluation(report, best["active"], "test.jsonl", "beam")
    assert ev is not None, "results/budget_masks/dld.json lacks this mask on the synthetic test set"
    metrics = {m.label: m.value for m in at.metric}
    label = "Recommended depth" if ev["wer"] < USABLE else "Best depth that fits"
    assert metrics[label] == f"{len(best['active'])}/{dld_modules()} modules"
    assert metrics["Expected WER"] == f"WER {100 * ev['wer']:.1f}%"
    assert metrics["GFLOPs"] == f"{best['gflops']:.3f}"

    at.slider(key="budget_gflops").set_value(at.slider(key="budget_gflops").min).run()
    no_exceptions(at)
    assert any(w.value.startswith("No usable model of DLD (dld) fits") for w in at.warning)
    assert not any(m.label == "Recommended depth" for m in at.metric)


def dld_modules() -> int:
    import json
    from dld_core.config import ModelConfig, from_dict
    return from_dict(ModelConfig, json.loads((CKPTS / "dld" / "config.json").read_text())["model"]).num_modules
