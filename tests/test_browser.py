"""Real-browser end-to-end test: `streamlit run` on a free localhost port + headless Debian Chromium.

Loads the app, records from Chromium's fake microphone (st.audio_input), uploads a WAV, toggles a layer
and checks that the transcript and the GFLOPs change. Screenshots go to test-artifacts/ (git-ignored).
"""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import app_fixtures as fx  # noqa: E402
from app_fixtures.server import CHROMIUM, CHROMIUM_ARGS, serve_app, shot, wait_idle  # noqa: E402

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"{CHROMIUM} is missing"),
]


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
def server(tmp_path_factory):
    with serve_app(tmp_path_factory.mktemp("browser")) as srv:
        yield srv


@pytest.fixture(scope="module")
def browser(server):
    from playwright.sync_api import sync_playwright
    mic = speech_wav(server["root"] / "mic.wav")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=[
            *CHROMIUM_ARGS, "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
            f"--use-file-for-fake-audio-capture={mic}"])
        yield b
        b.close()


def student_text(page) -> str:
    return page.get_by_test_id("stCode").first.inner_text().strip()


def gflops_text(page) -> str:
    return page.get_by_test_id("stMetric").first.get_by_test_id("stMetricValue").inner_text().strip()


def test_inspect_end_to_end(server, browser):
    context = browser.new_context(viewport={"width": 1440, "height": 2000}, permissions=["microphone"])
    page = context.new_page()
    page.goto(server["url"], wait_until="domcontentloaded")
    page.get_by_test_id("stCode").first.wait_for(timeout=90_000)
    wait_idle(page)
    page.get_by_test_id("stPlotlyChart").nth(2).wait_for(timeout=60_000)
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
        arg=sample_text, timeout=60_000)
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
        arg=rec_text, timeout=60_000)
    wait_idle(page)
    up_text, up_gflops = student_text(page), gflops_text(page)
    assert up_text
    shot(page, "03_inspect_uploaded")

    # Toggle a layer: transcript and GFLOPs change.
    page.get_by_test_id("stCheckbox").filter(has_text="L2").first.click()
    page.wait_for_function(
        "(prev) => { const m = document.querySelector('[data-testid=\"stMetricValue\"]'); return m && m.innerText.trim() !== prev; }",
        arg=up_gflops, timeout=30_000)
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
        page.get_by_test_id(ready).first.wait_for(timeout=60_000)
        wait_idle(page)
        if name == "budgets":
            page.get_by_test_id("stPlotlyChart").first.wait_for(timeout=30_000)
        if name == "importance":
            page.get_by_role("button", name="Compute over").click()
            page.get_by_test_id("stPlotlyChart").nth(2).wait_for(timeout=90_000)
            wait_idle(page)
        assert page.get_by_test_id("stException").count() == 0
        shot(page, f"05_{name}")
    context.close()
