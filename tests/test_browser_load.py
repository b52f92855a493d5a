"""The app under load, in a real browser: one `streamlit run` server (tiny seeded checkpoints), one headless
Chromium process.

* test_concurrent_sessions_see_their_own_mask: 8 browser contexts (8 Streamlit sessions) on the same cached
  model switch to 8 different layer masks at the same time, then rotate masks (so each session is served
  results another session computed). Every page must show its own mask's transcript and GFLOPs, computed
  here directly with dld_core on the same clip; the server must stay healthy and its memory bounded.
* test_upload_refusals: over-size, wrong-type, garbage and over-long uploads get a friendly refusal (the
  uploader's own message or a one-line st.error), never a traceback.

Figures (sessions, masks, server RSS, durations, upload outcomes) go to test-artifacts/load_report.json.
"""
from __future__ import annotations

import itertools
import json
import threading
import time
from pathlib import Path

import pytest

from tests import app_fixtures as fx
from tests.app_fixtures.server import (ARTIFACTS, BROWSER_MARKS, chromium, health_ok, rss_mb, server,  # noqa: F401
                                       shot, wait_idle)                 # (server: a fixture)

pytestmark = BROWSER_MARKS

SESSIONS = 8
RSS_GROWTH_LIMIT_MB = 600
REPORT = ARTIFACTS / "load_report.json"
VIEWPORT = {"width": 1280, "height": 1000}
LOAD_TIMEOUT = 90_000


# --------------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def browser(server):
    with chromium() as b:
        yield b


@pytest.fixture(scope="module")
def report():
    """One dict for the module, written to test-artifacts/load_report.json after each test."""
    data: dict = {"created": time.strftime("%Y-%m-%dT%H:%M:%S")}
    yield data
    write_report(data)


def write_report(data: dict) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    REPORT.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")


@pytest.fixture(scope="module")
def expected(server):
    """Transcript and GFLOPs of every non-empty mask of the default student on the default sample clip,
    computed in this process with dld_core (what the Inspect page must show)."""
    import torch
    from dld_core.audio import load_audio, load_manifest
    from dld_core.checkpoint import load_checkpoint
    from dld_core.flops import gflops
    from dld_core.inference import transcribe

    torch.set_num_threads(1)
    model = load_checkpoint(server["ckpts"]["dld"]).model.eval()     # the app's default student
    row = load_manifest(str(server["manifest"]))[0]                  # the app's default sample clip
    samples = load_audio(row["audio_filepath"]).samples
    n = model.config.n_layers
    out = {}
    for mask in itertools.product((True, False), repeat=n):
        if any(mask):
            text = transcribe(model, [samples], active=list(mask))[0]
            out[mask] = {"text": text or "(empty transcript)",
                         "gflops": f"{gflops(model, len(samples), list(mask)):.3f}"}
    return {"n_layers": n, "clip": Path(row["audio_filepath"]).name, "by_mask": out}


def pick_masks(by_mask: dict, n_layers: int, count: int) -> list[tuple[bool, ...]]:
    """`count` masks that differ from full depth, spread over depths, with distinct transcripts first (so a
    session shown another session's result cannot pass by chance)."""
    full = (True,) * n_layers
    by_k: dict[int, list] = {}
    for mask in by_mask:
        if mask != full:
            by_k.setdefault(sum(mask), []).append(mask)
    order = [m for group in itertools.zip_longest(*(by_k[k] for k in sorted(by_k, reverse=True)))
             for m in group if m is not None]                       # round-robin over depths
    chosen, texts = [], {by_mask[full]["text"]}                     # every session starts at full depth
    for mask in order:                                              # distinct, non-empty transcripts first
        text = by_mask[mask]["text"]
        if text not in texts and text != "(empty transcript)" and len(chosen) < count:
            chosen.append(mask)
            texts.add(text)
    for mask in order:                                              # then anything, if too few
        if mask not in chosen and len(chosen) < count:
            chosen.append(mask)
    assert len(chosen) == count, f"only {len(chosen)} masks available"
    return chosen


def mask_str(mask) -> str:
    return "".join("1" if m else "0" for m in mask)


# ------------------------------------------------------------------------------------------ page helpers
def toggle(page, i: int):
    """The st.toggle of module i (0-based), labelled L{i+1}."""
    return page.get_by_test_id("stCheckbox").filter(has=page.get_by_text(f"L{i + 1}", exact=True)).first


def page_mask(page, n: int) -> tuple[bool, ...]:
    return tuple(toggle(page, i).locator("input").is_checked() for i in range(n))


def metric_value(page, label: str) -> str:
    box = page.get_by_test_id("stMetric").filter(has=page.get_by_test_id("stMetricLabel").get_by_text(label, exact=True))
    return box.first.get_by_test_id("stMetricValue").inner_text().strip()


def shown(page) -> dict:
    return {"text": page.get_by_test_id("stCode").first.inner_text().strip(),
            "gflops": metric_value(page, "GFLOPs (mask)"),
            "modules_on": metric_value(page, "Modules on")}


def wait_for_mask_result(page, mask, timeout: float = LOAD_TIMEOUT) -> None:
    """Until the script run for `mask` has finished: toggles show the mask, "Modules on" matches and no run is
    in progress (the status widget is gone)."""
    n = len(mask)
    page.wait_for_function(
        """([want, on]) => {
            if (document.querySelector('[data-testid="stStatusWidget"]')) return false;
            const boxes = [...document.querySelectorAll('[data-testid="stCheckbox"]')];
            for (let i = 0; i < want.length; i++) {
                const box = boxes.find(b => b.innerText.trim() === `L${i + 1}`);
                if (!box || box.querySelector('input').checked !== want[i]) return false;
            }
            const metric = [...document.querySelectorAll('[data-testid="stMetric"]')]
                .find(m => m.querySelector('[data-testid="stMetricLabel"]')?.innerText.trim() === 'Modules on');
            return !!metric && metric.querySelector('[data-testid="stMetricValue"]').innerText.trim() === on;
        }""", arg=[list(mask), f"{sum(mask)}/{n}"], timeout=timeout)
    page.wait_for_timeout(150)
    page.wait_for_function("() => !document.querySelector('[data-testid=\"stStatusWidget\"]')", timeout=timeout)


def no_errors(page) -> None:
    assert page.get_by_test_id("stException").count() == 0
    assert page.get_by_test_id("stAlertContentError").count() == 0
    assert "Traceback" not in page.locator("body").inner_text()


class RssSampler:
    """Samples the server's VmRSS every 0.25 s on a thread (peak during the load)."""

    def __init__(self, pid: int):
        self.pid, self.peak, self._stop = pid, 0.0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.peak = max(self.peak, rss_mb(self.pid))
            except (OSError, RuntimeError):
                return
            self._stop.wait(0.25)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(2)


# ---------------------------------------------------------------------------------------------- tests
def test_concurrent_sessions_see_their_own_mask(server, browser, expected, report):
    t_start = time.perf_counter()
    n = expected["n_layers"]
    masks = pick_masks(expected["by_mask"], n, SESSIONS)
    full = (True,) * n

    # Warm-up session: the models are loaded into the shared cache and the full-depth result computed.
    contexts = [browser.new_context(viewport=VIEWPORT) for _ in range(SESSIONS)]
    pages = [c.new_page() for c in contexts]
    pages[0].goto(f"{server['url']}/inspect", wait_until="domcontentloaded")
    wait_for_mask_result(pages[0], full)
    warm_s = time.perf_counter() - t_start
    rss_before = rss_mb(server["pid"])

    with RssSampler(server["pid"]) as sampler:
        # All other sessions open at once.
        t0 = time.perf_counter()
        for page in pages[1:]:
            page.goto(f"{server['url']}/inspect", wait_until="commit")
        for page in pages:
            wait_for_mask_result(page, full)
            assert shown(page) == {**expected["by_mask"][full], "modules_on": f"{n}/{n}"}
        open_s = time.perf_counter() - t0

        rounds, seen_rounds = [], []
        for shift in (0, 1):            # round 1: 8 different masks at once; round 2: every session takes the next one
            targets = [masks[(s + shift) % SESSIONS] for s in range(SESSIONS)]
            t0 = time.perf_counter()
            # Click every session's toggles in one sweep (round-robin over sessions), without waiting for
            # the server: all 8 sessions rerun concurrently on the same cached model.
            current = [page_mask(p, n) for p in pages]
            for i in range(n):
                for page, now, want in zip(pages, current, targets):
                    if now[i] != want[i]:
                        toggle(page, i).click()
            seen = []
            for s, (page, want) in enumerate(zip(pages, targets)):
                wait_for_mask_result(page, want)
                got = shown(page)
                seen.append({"session": s, "mask": mask_str(want), **got})
                exp = expected["by_mask"][want]
                assert got == {**exp, "modules_on": f"{sum(want)}/{n}"}, (
                    f"session {s} with mask {mask_str(want)} shows {got}, expected {exp}")
                no_errors(page)
            # Nothing moved afterwards either (a late run of another session must not touch this page).
            for s, (page, want) in enumerate(zip(pages, targets)):
                assert page_mask(page, n) == want
                assert shown(page)["text"] == expected["by_mask"][want]["text"], f"session {s} changed"
            rounds.append(round(time.perf_counter() - t0, 2))
            seen_rounds.append(seen)
        shot(pages[0], "10_load_session0")
        shot(pages[-1], "11_load_session7")
        rss_loaded = rss_mb(server["pid"])
        for c in contexts:
            c.close()
        time.sleep(1.0)
        rss_after = rss_mb(server["pid"])

    assert server["proc"].poll() is None, "the server died"
    assert health_ok(server["url"]), "/_stcore/health is not OK after the load"
    total_s = time.perf_counter() - t_start
    figures = {
        "sessions": SESSIONS, "chromium_processes": 1, "clip": expected["clip"], "n_layers": n,
        "masks": [mask_str(m) for m in masks],
        "expected": {mask_str(m): expected["by_mask"][m] for m in masks},
        "rounds": [{"round": r + 1, "seconds": secs, "sessions": seen}
                   for r, (secs, seen) in enumerate(zip(rounds, seen_rounds))],
        "server_rss_mb": {"before": round(rss_before, 1), "peak": round(max(sampler.peak, rss_loaded), 1),
                          "with_sessions_open": round(rss_loaded, 1), "after_close": round(rss_after, 1),
                          "growth": round(rss_after - rss_before, 1), "limit_growth": RSS_GROWTH_LIMIT_MB},
        "seconds": {"warm_up_first_session": round(warm_s, 2), "open_7_more_sessions": round(open_s, 2),
                    "mask_rounds": rounds, "test_total": round(total_s, 2)},
        "health_ok_after": True,
    }
    report["load"] = figures
    write_report(report)
    print(json.dumps({k: v for k, v in figures.items() if k not in ("rounds", "expected")}, indent=2))
    assert rss_loaded - rss_before < RSS_GROWTH_LIMIT_MB, figures["server_rss_mb"]
    assert rss_after - rss_before < RSS_GROWTH_LIMIT_MB, figures["server_rss_mb"]


def test_upload_refusals(server, browser, report, tmp_path):
    import numpy as np
    import soundfile as sf

    t_start = time.perf_counter()
    context = browser.new_context(viewport=VIEWPORT)
    page = context.new_page()
    page.goto(f"{server['url']}/inspect", wait_until="domcontentloaded")
    page.get_by_test_id("stCode").first.wait_for(timeout=LOAD_TIMEOUT)
    wait_idle(page)
    page.get_by_test_id("stButtonGroup").first.get_by_role("radio", name="Upload").click()
    page.get_by_test_id("stFileUploaderDropzoneInput").wait_for(state="attached", timeout=30_000)
    wait_idle(page)

    big = tmp_path / "big.wav"                       # 26 MB > server.maxUploadSize = 25 (MB)
    with open(big, "wb") as f:
        f.write(fx.tone_wav(1.0))
        f.truncate(26 * 1024 * 1024)
    notes = tmp_path / "notes.txt"
    notes.write_text("not audio\n")
    picture = tmp_path / "picture.png"
    picture.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(200))
    garbage = tmp_path / "garbage.wav"
    garbage.write_bytes(np.random.default_rng(0).integers(0, 256, 20_000, dtype=np.uint8).tobytes())
    too_long = tmp_path / "long.wav"                 # a valid clip over the 60 s limit
    sf.write(too_long, np.zeros(61 * 16000, np.float32) + 0.01, 16000, subtype="PCM_16")

    # (file, where the refusal shows, text it must contain)
    cases = [
        ("over_size", big, "chip", "25.0MB or smaller"),
        ("wrong_type_txt", notes, "chip", "files are not allowed"),
        ("wrong_type_png", picture, "chip", "files are not allowed"),
        ("garbage_wav", garbage, "st.error", "Cannot use this audio"),
        ("too_long_wav", too_long, "st.error", "Cannot use this audio"),
    ]
    results = []
    uploader = page.get_by_test_id("stFileUploader")
    for name, path, where, needle in cases:
        t0 = time.perf_counter()
        page.get_by_test_id("stFileUploaderDropzoneInput").set_input_files(str(path))
        if where == "chip":
            message = uploader.get_by_test_id("stFileChip").get_by_role("alert")
            message.wait_for(timeout=30_000)
            assert uploader.get_by_test_id("stFileChipIconError").is_visible()
        else:
            message = page.get_by_test_id("stAlertContentError")
            message.first.wait_for(timeout=60_000)
            message = message.first
        wait_idle(page)
        text = message.inner_text().strip()
        assert needle in text, f"{name}: {text!r}"
        assert page.get_by_test_id("stException").count() == 0, name
        body = page.locator("body").inner_text()
        assert "Traceback" not in body and "Error details" not in body, name
        if where == "st.error":
            errors = page.get_by_test_id("stAlertContentError").all()
            assert len(errors) == 1, name
            line = text.replace("error", "", 1).strip() if text.startswith("error") else text
            assert "\n" not in line, f"{name}: not one line: {text!r}"     # the material icon name comes first
            assert "<bytes>" not in line, f"{name}: {line!r}"
            text = line
        else:
            assert page.get_by_test_id("stAlertContentError").count() == 0, name
        shot(page, f"12_upload_{name}")
        results.append({"case": name, "file": path.name, "bytes": path.stat().st_size, "shown_as": where,
                        "message": text, "seconds": round(time.perf_counter() - t0, 2)})
        remove = uploader.get_by_test_id("stFileChipDeleteBtn").get_by_role("button")
        if remove.count():
            remove.first.click()
            wait_idle(page)

    # The app still works after the refusals: a good upload is transcribed.
    good = tmp_path / "good.wav"
    good.write_bytes(fx.tone_wav(2.0, seed=7))
    page.get_by_test_id("stFileUploaderDropzoneInput").set_input_files(str(good))
    page.get_by_test_id("stMetric").first.wait_for(timeout=LOAD_TIMEOUT)
    wait_idle(page)
    no_errors(page)
    assert page.get_by_test_id("stCode").first.inner_text().strip()
    context.close()
    assert health_ok(server["url"])

    report["uploads"] = {"max_upload_size_mb": 25, "cases": results,
                         "seconds": round(time.perf_counter() - t_start, 2)}
    write_report(report)
    print(json.dumps(report["uploads"], indent=2))
