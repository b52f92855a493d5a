"""Streamlit AppTest coverage of every page, against tiny random checkpoints made in a temp folder."""
from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from dld_core import masks
from tests import app_fixtures as fx
from tests.app_fixtures.apptest import APP, env, metric, no_exceptions, run_app, world  # noqa: F401 (env, world: fixtures)


def transcripts(at: AppTest) -> list[str]:
    return [c.value for c in at.code]


def plotly_count(at: AppTest) -> int:
    return len(at.get("plotly_chart"))


# ------------------------------------------------------------------------------------------------ Inspect
def test_inspect_sample_shows_transcripts_and_views(env):
    at = run_app()
    no_exceptions(at)
    assert not at.error, [e.value for e in at.error]
    student, teacher = transcripts(at)[:2]
    assert student and student != "(empty transcript)"
    assert teacher
    assert float(metric(at, "GFLOPs (mask)")) > 0
    assert metric(at, "Modules on") == "4/4"
    assert metric(at, "WER").endswith("%")                 # reference prefilled from the sample
    assert at.text_input(key="reference").value == "the quick brown fox"
    assert plotly_count(at) == 3                            # spectrogram+posteriorgram, depth KL, drop-one KL
    assert any("dld-diff" in h.proto.body for h in at.html)  # the coloured word diff


def test_toggle_changes_gflops_and_transcript(env):
    at = run_app()
    g_full, text_full = float(metric(at, "GFLOPs (mask)")), transcripts(at)[0]
    at.toggle(key="layer_1").set_value(False).run()
    no_exceptions(at)
    assert metric(at, "Modules on") == "3/4"
    assert float(metric(at, "GFLOPs (mask)")) < g_full
    assert transcripts(at)[0] != text_full
    assert at.session_state["mask"] == (True, False, True, True)
    at.toggle(key="layer_1").set_value(True).run()
    assert float(metric(at, "GFLOPs (mask)")) == pytest.approx(g_full)
    assert transcripts(at)[0] == text_full                 # cached by (audio, mask): same answer


def test_presets(env):
    at = run_app()
    at.button(key="preset_every_other").click().run()
    assert at.session_state["mask"] == (False, True, False, True) == tuple(masks.preset("every_other", 4, 2))
    at.number_input(key="preset_k").set_value(2).run()
    at.button(key="preset_first_k").click().run()
    assert at.session_state["mask"] == (True, True, False, False)
    at.button(key="preset_only_k").click().run()
    assert at.session_state["mask"] == (False, True, False, False)
    at.button(key="preset_best_k").click().run()
    no_exceptions(at)
    assert sum(at.session_state["mask"]) == 2
    at.button(key="preset_all").click().run()
    assert at.session_state["mask"] == (True,) * 4


def test_upload_and_record(env):
    at = run_app()
    at.segmented_control(key="audio_source").set_value("Upload").run()
    assert at.file_uploader(key="upload").allowed_type == [".wav", ".flac", ".mp3", ".ogg"]
    at.file_uploader(key="upload").upload("clip.wav", fx.tone_wav(2.0, seed=7), "audio/wav").run()
    no_exceptions(at)
    assert not at.error
    assert transcripts(at)[0]
    assert at.text_input(key="reference").value == ""      # no reference for an upload
    assert metric(at, "WER") == "—"

    at.file_uploader(key="upload").set_value(("notes.wav", b"this is text, not audio", "audio/wav")).run()
    no_exceptions(at)
    assert len(at.error) == 1 and "text, not audio" in at.error[0].value
    assert "\n" not in at.error[0].value

    at.segmented_control(key="audio_source").set_value("Record").run()
    at.audio_input(key="recording").set_value(("rec.wav", fx.tone_wav(1.0, seed=3), "audio/wav")).run()
    no_exceptions(at)
    assert not at.error
    assert transcripts(at)[0]


def test_no_checkpoints_is_one_clear_error(env, tmp_path, monkeypatch):
    empty = tmp_path / "none"
    empty.mkdir()
    monkeypatch.setenv("DLD_CHECKPOINTS_DIR", str(empty))
    for page in ("inspect", "budgets", "importance"):
        at = run_app(page)
        no_exceptions(at)
        assert any("No checkpoints found" in e.value for e in at.error)


def test_corrupt_student_and_missing_teacher(env, tmp_path, monkeypatch):
    root = tmp_path / "ckpts"
    shutil.copytree(env["root"] / "checkpoints" / "dld", root / "dld")
    weights = root / "dld" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-10:] = b"\x00" * 10
    weights.write_bytes(bytes(data))
    monkeypatch.setenv("DLD_CHECKPOINTS_DIR", str(root))
    at = run_app()
    no_exceptions(at)
    messages = " ".join(e.value for e in at.error)
    assert "checksum" in messages
    assert "No teacher checkpoint" in messages

    shutil.copytree(env["root"] / "checkpoints" / "ld", root / "ld")       # a good student, still no teacher
    at = run_app()
    no_exceptions(at)
    assert any("No teacher checkpoint" in e.value for e in at.error)


# ------------------------------------------------------------------------------------------------ Budgets
def test_budgets_chart_table_and_recommendation(env):
    at = run_app("budgets")
    no_exceptions(at)
    assert not at.error
    assert plotly_count(at) == 1
    table = at.dataframe[0].value
    assert len(table) == 12 and {"model", "modules kept", "GFLOPs", "WER %", "on Pareto front"} <= set(table.columns)
    assert table["on Pareto front"].any()
    assert at.get("download_button")
    depth = lambda: next(m.value for m in at.metric if m.label in ("Recommended depth", "Best depth that fits"))  # noqa: E731
    assert depth().endswith("modules")                     # (random models: no usable one, the card says so)
    at.slider(key="budget_gflops").set_value(at.slider(key="budget_gflops").min).run()
    no_exceptions(at)
    assert depth().startswith("1/")
    at.button(key="use_mask").click().run()                # opens the recommended mask in Inspect
    no_exceptions(at)
    assert sum(at.session_state["mask"]) == 1
    assert metric(at, "Modules on") == "1/4"


def test_budgets_background_evaluation(env, tmp_path, monkeypatch):
    root = tmp_path / "ckpts"
    shutil.copytree(env["root"] / "checkpoints" / "dld", root / "dld", ignore=shutil.ignore_patterns("eval_*"))
    monkeypatch.setenv("DLD_CHECKPOINTS_DIR", str(root))
    at = run_app("budgets")                                # missing results start computing on their own
    no_exceptions(at)
    assert any("in the background" in i.value for i in at.info)
    deadline = time.time() + 90
    while time.time() < deadline and not list((tmp_path / "results").glob("*.json")):
        time.sleep(1)
    assert list((tmp_path / "results").glob("*.json")), "background evaluation wrote no results"
    at = run_app("budgets")
    no_exceptions(at)
    assert plotly_count(at) == 1 and len(at.dataframe[0].value) == 4


def test_a_new_model_is_evaluated_on_a_test_set_the_shipped_results_cover(env, tmp_path, monkeypatch):
    """Issue 22: the background evaluation of a model without results runs on the first test set of
    dld_core/eval_sets.py on this server (here a 3-clip synthetic test set), not on the sample clips."""
    from dld_core.audio import load_manifest
    rows = load_manifest(env["manifest"])
    corpus = tmp_path / "corpus" / "whisper"
    corpus.mkdir(parents=True)
    (corpus / "test.jsonl").write_text("".join(json.dumps({k: r[k] for k in ("audio_filepath", "text", "duration")})
                                               + "\n" for r in rows))
    root = tmp_path / "ckpts"
    shutil.copytree(env["root"] / "checkpoints" / "dld", root / "dld", ignore=shutil.ignore_patterns("eval_*"))
    monkeypatch.setenv("DLD_CHECKPOINTS_DIR", str(root))
    at = run_app("budgets")
    no_exceptions(at)
    started = [json.loads(p.read_text()) for p in (tmp_path / "jobs").glob("*/job.json")]
    assert [j["spec"]["manifest"] for j in started] == [str(corpus / "test.jsonl")]


# ------------------------------------------------------------------------------------------ Importance
def test_importance(env):
    at = run_app("importance")
    no_exceptions(at)
    at.button(key="importance_go").click().run()
    no_exceptions(at)
    assert not at.error
    assert plotly_count(at) == 3                           # ΔWER bars, ΔKL bars, greedy path
    path = at.dataframe[0].value
    assert list(path["kept"]) == [4, 3, 2, 1]


@pytest.mark.slow
# ------------------------------------------------------------------------------------------------- Train
def test_train_start_refuse_stop(env, tmp_path):
    jobs_dir = tmp_path / "jobs"
    at = run_app("train")
    no_exceptions(at)
    assert any("No training yet" in i.value for i in at.info)
    at.segmented_control(key="train_recipe").set_value("teacher").run()
    at.radio(key="train_data").set_value("manifest").run()
    at.text_input(key="train_manifest").set_value(str(env["manifest"])).run()
    at.number_input(key="train_epochs").set_value(50).run()
    at.number_input(key="train_threads").set_value(1).run()
    at.button(key="train_start").click().run()
    no_exceptions(at)
    assert not at.error, [e.value for e in at.error]
    from app import jobs
    job = jobs.latest(jobs_dir, "train")
    assert job is not None and job.spec["train"]["recipe"] == "teacher"
    try:
        deadline = time.time() + 90                        # wait until the trainer has started (signal handlers on)
        while time.time() < deadline and not any(e.get("event") == "step" for e in jobs.read_events(job.events_path)):
            assert jobs.status(job)["state"] == "running", jobs.tail(job.log_path)
            time.sleep(0.5)
        at = run_app("train")                              # a fresh session re-attaches to the running job
        no_exceptions(at)
        assert any(b.key == "job_stop" for b in at.button)
        assert at.button(key="train_start").disabled       # Start is off while a job runs
        with pytest.raises(jobs.JobBusyError):             # and the job mechanism refuses a second one
            jobs.start("train", jobs.TrainSpec(**job.spec), jobs_dir)
        at.button(key="job_stop").click().run()
        no_exceptions(at)
        assert jobs.status(job)["state"] == "stopped"
        at.button(key="job_resume").click().run()          # continue: a new job from OUT/resume
        no_exceptions(at)
        resumed = jobs.latest(jobs_dir, "train")
        assert resumed.id != job.id and resumed.spec["resume"] and resumed.out == job.out
        assert jobs.status(resumed)["state"] == "running"
    finally:
        for j in jobs.list_jobs(jobs_dir):
            jobs.stop(j, timeout=30)


def test_trained_models_appear_in_the_picker(env, tmp_path):
    out = tmp_path / "jobs" / "models" / "dld-tiny-x"
    shutil.copytree(env["root"] / "checkpoints" / "ld", out)
    at = run_app()
    no_exceptions(at)
    options = at.selectbox(key="student_ckpt").options
    assert any(o.startswith("trained/models/dld-tiny-x") for o in options), options
    at.selectbox(key="student_ckpt").set_value(str(out)).run()
    no_exceptions(at)
    assert transcripts(at)[0]


# ------------------------------------------------------------------------------ who can reach the app
def test_the_server_listens_on_localhost_by_default():
    import tomllib
    config = tomllib.loads((Path(APP).parents[1] / ".streamlit" / "config.toml").read_text())
    assert config["server"]["address"] == "127.0.0.1"


def fill_manifest(at: AppTest, path: str) -> AppTest:
    at.segmented_control(key="train_recipe").set_value("teacher").run()
    at.radio(key="train_data").set_value("manifest").run()
    at.text_input(key="train_manifest").set_value(path).run()
    return at


@pytest.fixture
def served_to_network():
    from streamlit import config
    old = config.get_option("server.address")
    config.set_option("server.address", "0.0.0.0")
    yield
    config.set_option("server.address", old)


def test_served_to_a_network_manifests_are_limited_to_data_folders(env, served_to_network, tmp_path, monkeypatch):
    outside = tmp_path / "secret.jsonl"
    outside.write_text("{}\n")
    messages = []
    for path in (str(outside), str(tmp_path / "does-not-exist.jsonl")):      # same answer: nothing revealed
        at = fill_manifest(run_app("train"), path)
        no_exceptions(at)
        assert at.button(key="train_start").disabled
        messages.append([c.value for c in at.caption if "manifest" in c.value])
    assert messages[0] == messages[1] == [messages[0][0]] and "accepts no manifest paths" in messages[0][0]
    monkeypatch.setenv("DLD_DATA_DIRS", str(env["manifest"].parent))
    at = fill_manifest(run_app("train"), str(env["manifest"]))
    assert not at.button(key="train_start").disabled
    at = fill_manifest(run_app("train"), str(env["manifest"].parent / ".." / outside.name))
    assert at.button(key="train_start").disabled


def test_the_operator_can_turn_training_off(env, monkeypatch):
    monkeypatch.setenv("DLD_TRAINING", "off")
    at = fill_manifest(run_app("train"), str(env["manifest"]))
    no_exceptions(at)
    assert any("Training is turned off" in i.value for i in at.info)
    assert at.button(key="train_start").disabled


# ------------------------------------------------------------------------------------------------ decoders
def test_inspect_decoder_switch_and_greedy_fallback(env, tmp_path, monkeypatch):
    from dld_core.decoder_files import write_decoder_files
    from dld_core.decoder_params import DIR_ENV
    monkeypatch.setenv(DIR_ENV, str(tmp_path / "no-decoder-files"))   # beam unavailable: fall back, say so
    at = run_app()
    greedy = at.code[0].value
    at.segmented_control(key="decoder").set_value("beam").run()
    no_exceptions(at)
    assert any("Beam decoding is unavailable here" in c.value and "build-lm" in c.value for c in at.caption)
    assert at.code[0].value == greedy
    words = ["the", "quick", "brown", "fox", "seven", "two", "nine"]
    folder = write_decoder_files(tmp_path / "tiny", {w: -1.0 for w in words})
    monkeypatch.setenv(DIR_ENV, str(folder))              # another decoder folder: beam_ready checks it afresh
    at = run_app()
    at.segmented_control(key="decoder").set_value("both").run()
    no_exceptions(at)
    assert not any("unavailable" in c.value for c in at.caption)
    texts = [c.value for c in at.code]
    assert texts[1] == greedy                                    # the greedy transcript shown next to beam's
    assert any(m.value.startswith("**Student**") and m.value.endswith("· beam") for m in at.markdown)
