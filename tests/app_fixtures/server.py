"""A real `streamlit run` server for the browser tests (test_browser.py, test_browser_load.py), plus the
Chromium launch settings and page helpers they share.

`serve_app(root)` seeds tiny checkpoints / sample clips / evaluation results under `root`, starts the app
on a free localhost port with the DLD_* folders pointed there, waits for /_stcore/health and yields
{"url", "root", "pid", "ckpts", "manifest"}; the server is stopped on exit.
"""
from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Iterator, Optional

import pytest

from . import make_budget_reports, make_checkpoints, make_eval_results, make_samples

REPO = Path(__file__).resolve().parents[2]
APP = REPO / "app" / "streamlit_app.py"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
ARTIFACTS = REPO / "test-artifacts"
# How long a browser test waits for the app to say it is done (its status widget gone, a result drawn): a
# safety net sized for a busy machine (a training on both cores), not for an idle one; each wait ends as soon
# as the app signals, and pytest-timeout (pyproject.toml, 600 s) ends a test that hangs.
APP_WAIT_MS = 480_000
BROWSER_MARKS = [pytest.mark.browser, pytest.mark.slow,
                 pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"{CHROMIUM} is missing")]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """The app served for one test module (import this fixture into the module)."""
    with serve_app(tmp_path_factory.mktemp("app")) as srv:
        yield srv


@contextlib.contextmanager
def chromium(*extra_args: str):
    """Debian's Chromium driven by Playwright, headless, with the launch flags every browser test uses."""
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[*CHROMIUM_ARGS, *extra_args])
        try:
            yield browser
        finally:
            browser.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def health_ok(url: str, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/_stcore/health", timeout=timeout) as r:
            return r.status == 200
    except OSError:
        return False


def rss_mb(pid: int) -> float:
    """Resident set size of a process in MB (VmRSS of /proc/<pid>/status)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


@contextlib.contextmanager
def serve_app(root: Path, extra_env: Optional[dict] = None, start_timeout: float = 60,
              family: str = "conformer") -> Iterator[dict]:
    root = Path(root)
    ckpts = make_checkpoints(root / "checkpoints", family=family)
    manifest = make_samples(root / "samples")
    make_eval_results(ckpts, manifest)
    make_budget_reports(ckpts, manifest)
    port = free_port()
    env = {**os.environ, "DLD_CHECKPOINTS_DIR": str(root / "checkpoints"), "DLD_SAMPLES_DIR": str(root / "samples"),
           "DLD_JOBS_DIR": str(root / "jobs"), "DLD_RESULTS_DIR": str(root / "results"),
           "DLD_DOWNLOADS_DIR": str(root / "downloads"), **(extra_env or {})}
    log_path = root / "streamlit.log"
    url = f"http://127.0.0.1:{port}"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", str(APP),
                                 "--server.port", str(port), "--server.address", "127.0.0.1"],
                                cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.time() + start_timeout
            while not health_ok(url):
                if proc.poll() is not None or time.time() > deadline:
                    raise RuntimeError("streamlit did not start:\n" + log_path.read_text()[-3000:])
                time.sleep(0.3)
            yield {"url": url, "root": root, "pid": proc.pid, "proc": proc, "log": log_path,
                   "ckpts": ckpts, "manifest": manifest}
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)


def shot(page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def wait_idle(page, timeout: float = APP_WAIT_MS) -> None:
    """Streamlit shows a 'running' status widget while the script runs; wait until it is gone."""
    page.wait_for_timeout(300)
    page.wait_for_function(
        "() => !document.querySelector('[data-testid=\"stStatusWidget\"]')", timeout=timeout)
    page.wait_for_timeout(200)


def compute_importance(page, timeout: float = APP_WAIT_MS) -> None:
    """On the Layer importance page: wait for the page's own sign that its script reached the end (the "Compute
    over ..." button, or the caption that every view is computed and cached), then press the button if it is
    there. (Counting the buttons once the status widget is gone can come before the button on a loaded machine:
    the click was skipped and the charts never came.)"""
    go = page.get_by_role("button", name="Compute over")
    go.or_(page.get_by_text("Computed over", exact=False)).first.wait_for(timeout=timeout)
    if go.count():
        go.click()
        wait_idle(page, timeout=timeout)


# Chart tick labels (x and y) of one st.plotly_chart, each with whether it lies inside the drawn chart (not cut).
TICKS = """(chart) => {
    const svg = chart.querySelector('svg.main-svg').getBoundingClientRect();
    return [...chart.querySelectorAll('.xtick text, .ytick text')].map(t => {
        const r = t.getBoundingClientRect();
        return {text: t.textContent, axis: t.closest('.xtick') ? 'x' : 'y',
                inside: r.left >= svg.left - 0.5 && r.right <= svg.right + 0.5
                        && r.top >= svg.top - 0.5 && r.bottom <= svg.bottom + 0.5};
    });
}"""


# buttons whose text is whole: no element inside overflows its box (an ellipsis is an overflow)
WHOLE = ("els => els.length > 0 && els.every(b => [b, ...b.querySelectorAll('*')]"
         ".every(e => e.clientWidth === 0 || e.scrollWidth <= e.clientWidth))")

STRIP_LABELS = """(n) => [...Array(n).keys()].map(i => document.querySelector(`.st-key-layer_${i} [data-testid="stCheckbox"]`)).map(c => {
    const box = c.querySelector('[data-testid="stMarkdownContainer"]');
    const text = box.querySelector('p') || box;
    const a = text.getBoundingClientRect(), b = box.getBoundingClientRect(), w = c.getBoundingClientRect();
    return {name: c.querySelector('input').getAttribute('aria-label'), text: box.innerText.trim(),
            scroll: box.scrollWidth, client: box.clientWidth,
            inside: a.left >= b.left - 0.5 && a.right <= b.right + 0.5 && b.right <= w.right + 0.5 && a.width > 0};
})"""
