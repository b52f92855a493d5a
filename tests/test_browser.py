"""Real-browser end-to-end test: `streamlit run` on a free localhost port + headless Debian Chromium.

Loads the app, records from Chromium's fake microphone (st.audio_input), uploads a WAV, toggles a layer
and checks that the transcript and the GFLOPs change. Screenshots go to test-artifacts/ (git-ignored).
"""
from __future__ import annotations

import dataclasses
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from tests import app_fixtures as fx
# server: a fixture
from tests.app_fixtures.server import (APP_WAIT_MS, BROWSER_MARKS, chromium, compute_importance, server,  # noqa: F401
                                       shot, wait_idle)

pytestmark = BROWSER_MARKS


def speech_wav(path: Path, text: str = "seven two nine, hello studio") -> Path:
    """A real spoken WAV (espeak-ng) for the fake microphone; a voiced tone when espeak-ng is missing."""
    espeak = shutil.which("espeak-ng")
    if espeak:
        raw = path.with_suffix(".raw.wav")
        if subprocess.run([espeak, "-w", str(raw), text], capture_output=True).returncode == 0:
            import numpy as np
            import soundfile as sf
            x, sr = sf.read(raw, dtype="float32")
            if sr != 16000:
                import soxr
                x = soxr.resample(x, sr, 16000)
            # Pad with a little silence so the fake device loops cleanly.
            x = np.concatenate([np.zeros(1600, np.float32), x, np.zeros(3200, np.float32)])
            sf.write(path, x, 16000, subtype="PCM_16")
            return path
    path.write_bytes(fx.tone_wav(3.0, seed=11))
    return path


@pytest.fixture(scope="module")
def browser(server):
    mic = speech_wav(server["root"] / "mic.wav")
    with chromium("--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
                  f"--use-file-for-fake-audio-capture={mic}") as b:
        yield b


def student_text(page) -> str:
    return page.get_by_test_id("stCode").first.inner_text().strip()


def gflops_text(page) -> str:
    return page.get_by_test_id("stMetric").first.get_by_test_id("stMetricValue").inner_text().strip()


def test_inspect_end_to_end(server, browser):
    context = browser.new_context(viewport={"width": 1440, "height": 2000}, permissions=["microphone"])
    page = context.new_page()
    page.goto(f"{server['url']}/inspect", wait_until="domcontentloaded")
    page.get_by_test_id("stCode").first.wait_for(timeout=APP_WAIT_MS)
    wait_idle(page)
    page.get_by_test_id("stPlotlyChart").nth(2).wait_for(timeout=APP_WAIT_MS)
    wait_idle(page)
    assert page.get_by_test_id("stException").count() == 0
    sample_text, sample_gflops = student_text(page), gflops_text(page)
    assert sample_text
    shot(page, "01_inspect_sample")

    # Record from the fake microphone.
    page.get_by_test_id("stButtonGroup").first.get_by_role("radio", name="Record").click()
    wait_idle(page)
    page.get_by_role("button", name="Record", exact=True).click()
    page.wait_for_timeout(2500)
    page.get_by_role("button", name="Stop recording").click()
    page.wait_for_function(
        "(prev) => { const c = document.querySelector('[data-testid=\"stCode\"]'); return c && c.innerText.trim() !== prev; }",
        arg=sample_text, timeout=APP_WAIT_MS)
    wait_idle(page)
    assert page.get_by_test_id("stException").count() == 0
    assert page.get_by_test_id("stAlertContentError").count() == 0
    rec_text = student_text(page)
    assert rec_text
    shot(page, "02_inspect_recorded")

    # Upload a WAV.
    page.get_by_test_id("stButtonGroup").first.get_by_role("radio", name="Upload").click()
    wait_idle(page)
    wav = server["root"] / "upload.wav"
    wav.write_bytes(fx.tone_wav(2.0, seed=7))
    page.get_by_test_id("stFileUploaderDropzoneInput").set_input_files(str(wav))
    page.wait_for_function(
        "(prev) => { const c = document.querySelector('[data-testid=\"stCode\"]'); return c && c.innerText.trim() !== prev; }",
        arg=rec_text, timeout=APP_WAIT_MS)
    wait_idle(page)
    up_text, up_gflops = student_text(page), gflops_text(page)
    assert up_text
    shot(page, "03_inspect_uploaded")

    # Toggle a layer: transcript and GFLOPs change.
    page.get_by_test_id("stCheckbox").filter(has_text="L2").first.click()
    page.wait_for_function(
        "(prev) => { const m = document.querySelector('[data-testid=\"stMetricValue\"]'); return m && m.innerText.trim() !== prev; }",
        arg=up_gflops, timeout=APP_WAIT_MS)
    wait_idle(page)
    assert float(gflops_text(page)) < float(up_gflops)
    assert student_text(page) != up_text
    assert page.get_by_test_id("stException").count() == 0
    shot(page, "04_inspect_toggled")
    context.close()


def test_other_pages_render(server, browser):
    context = browser.new_context(viewport={"width": 1440, "height": 2000})
    page = context.new_page()
    for name, ready in (("budgets", "stDataFrame"), ("importance", "stButton"), ("train", "stButton")):
        page.goto(f"{server['url']}/{name}", wait_until="domcontentloaded")
        page.get_by_test_id(ready).first.wait_for(timeout=APP_WAIT_MS)
        wait_idle(page)
        if name == "budgets":
            page.get_by_test_id("stPlotlyChart").first.wait_for(timeout=APP_WAIT_MS)
        if name == "importance":
            compute_importance(page)
            page.get_by_test_id("stPlotlyChart").nth(2).wait_for(timeout=APP_WAIT_MS)
            wait_idle(page)
        assert page.get_by_test_id("stException").count() == 0
        shot(page, f"05_{name}")
    context.close()


def test_train_page_trains_ld_and_dld_students(server, browser):
    """The Train page trains both kinds of student from the served teacher in the background: the student
    takes the teacher's architecture (no size flags), and each job ends Finished with a loadable model."""
    from dld_core.checkpoint import load_checkpoint
    context = browser.new_context(viewport={"width": 1440, "height": 2000})
    page = context.new_page()
    page.goto(f"{server['url']}/train", wait_until="domcontentloaded")
    page.get_by_role("button", name="Start training").wait_for(timeout=APP_WAIT_MS)
    wait_idle(page)
    teacher = load_checkpoint(server["ckpts"]["teacher"]).config
    for recipe in ("DLD", "LD"):
        page.get_by_test_id("stButtonGroup").first.get_by_role("radio", name=recipe, exact=True).click()
        wait_idle(page)
        page.get_by_text("Manifest path").click()
        wait_idle(page)
        box = page.get_by_label("Training manifest (JSONL)")
        box.fill(str(server["manifest"]))
        box.press("Enter")
        epochs = page.get_by_label("Epochs")
        epochs.fill("1")
        epochs.press("Enter")
        wait_idle(page)
        page.get_by_role("button", name="Start training").click()
        page.get_by_text(re.compile(rf"(Finished|Failed|Stopped) · {recipe}\b")).first.wait_for(timeout=APP_WAIT_MS)
        wait_idle(page)
        assert page.get_by_text(f"Finished · {recipe}").count() >= 1, page.get_by_test_id("stCode").last.inner_text()
        assert page.get_by_test_id("stException").count() == 0
        shot(page, f"06_train_{recipe.lower()}")
    models = sorted((server["root"] / "jobs" / "models").iterdir())
    assert [m.name.split("-")[0] for m in models] == ["dld", "ld"]
    for folder in models:
        ckpt = load_checkpoint(folder)
        assert ckpt.recipe == folder.name.split("-")[0]
        assert dataclasses.replace(ckpt.config, dropout=teacher.dropout) == teacher    # the teacher's architecture
    context.close()


def pick_student(page, name: str) -> None:
    """Choose a student by typing its folder name (the list may be longer than what it shows)."""
    page.get_by_test_id("stSidebar").get_by_test_id("stSelectbox").first.click()
    page.keyboard.type(name)
    page.get_by_role("option", name=re.compile(rf"^{re.escape(name)}\s")).first.click()
    wait_idle(page)


def test_layer_strip_is_rebuilt_after_a_failed_load(server, browser):
    """Picking a checkpoint that fails to load, then a good one, shows the good one's strip in step:
    every switch on, k and the module count right, and a click turns exactly one module off."""
    broken = server["root"] / "checkpoints" / "zz-broken"
    shutil.copytree(server["ckpts"]["ld"], broken)
    data = bytearray((broken / "model.safetensors").read_bytes())
    data[-8] ^= 0x01
    (broken / "model.safetensors").write_bytes(bytes(data))
    time.sleep(3.5)                                 # the app rescans checkpoint folders every 3 s
    context = browser.new_context(viewport={"width": 1440, "height": 2000})
    page = context.new_page()
    page.goto(f"{server['url']}/inspect", wait_until="domcontentloaded")
    page.get_by_test_id("stCode").first.wait_for(timeout=APP_WAIT_MS)
    wait_idle(page)
    pick_student(page, "zz-broken")
    page.get_by_text("cannot be used").first.wait_for(timeout=APP_WAIT_MS)
    pick_student(page, "ld")
    page.get_by_test_id("stCode").first.wait_for(timeout=APP_WAIT_MS)
    wait_idle(page)
    toggles = page.get_by_test_id("stCheckbox").locator("input")
    assert toggles.count() == 4 and all(toggles.nth(i).is_checked() for i in range(4))
    assert page.locator('input[aria-label="k"]').input_value() == "2"
    assert "4/4" in page.get_by_test_id("stMetric").nth(1).inner_text()
    page.get_by_test_id("stCheckbox").filter(has_text="L3").first.click()
    page.wait_for_function("() => [...document.querySelectorAll('[data-testid=\"stMetricValue\"]')]"
                           ".some(m => m.innerText.trim() === '3/4')", timeout=APP_WAIT_MS)
    assert page.get_by_test_id("stException").count() == 0
    shutil.rmtree(broken)
    context.close()
