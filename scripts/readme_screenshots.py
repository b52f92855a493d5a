"""README screenshots of the app with the shipped models: `streamlit run` on a free localhost port, headless
Debian Chromium at 1280 px, Inspect (first sample clip, every other module, beam decoding) and Budgets;
saved as small palette PNGs in docs/.   Usage: .venv/bin/python scripts/readme_screenshots.py"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from app_fixtures.server import APP, chromium, free_port, health_ok, wait_idle  # noqa: E402

OUT = REPO / "docs"
WIDTH = 1280


def save_small(png: bytes, path: Path, colours: int = 128) -> None:
    """A palette PNG (screenshots have few colours): a fraction of the size of the 24-bit original."""
    import io

    from PIL import Image
    image = Image.open(io.BytesIO(png)).convert("RGB")
    image.quantize(colors=colours, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)
    print(f"{path.relative_to(REPO)}: {image.size[0]}x{image.size[1]}, {path.stat().st_size / 1024:.0f} KiB")


def main() -> int:
    OUT.mkdir(exist_ok=True)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", str(APP), "--server.port", str(port),
                             "--server.address", "127.0.0.1", "--server.headless", "true"], cwd=REPO,
                            env={**os.environ}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 90
        while not health_ok(url):
            if proc.poll() is not None or time.time() > deadline:
                raise SystemExit("streamlit did not start")
            time.sleep(0.5)
        with chromium() as browser:
            page = browser.new_context(viewport={"width": WIDTH, "height": 900}).new_page()
            page.goto(f"{url}/inspect", wait_until="domcontentloaded")
            page.locator(".st-key-layer_0").wait_for(timeout=180_000)
            wait_idle(page, timeout=180_000)
            page.locator(".st-key-preset_every_other button").first.click()
            wait_idle(page, timeout=180_000)
            page.get_by_text("Beam (lexicon + LM)").first.click()
            wait_idle(page, timeout=180_000)
            page.get_by_test_id("stPlotlyChart").first.wait_for(timeout=180_000)
            page.mouse.move(0, 0)                    # no tooltip in the picture
            page.wait_for_timeout(1500)
            save_small(page.screenshot(full_page=False), OUT / "inspect.png")
            page.goto(f"{url}/budgets", wait_until="domcontentloaded")
            page.get_by_test_id("stPlotlyChart").first.wait_for(timeout=180_000)
            wait_idle(page, timeout=180_000)
            page.wait_for_timeout(1500)
            save_small(page.screenshot(full_page=False), OUT / "budgets.png")
    finally:
        proc.terminate()
        proc.wait(20)
    return 0


if __name__ == "__main__":
    sys.exit(main())
