"""The real browser clicks "Download this model" on the Budgets card: "Prepare download" exports the card's mask,
then the download button saves a valid zip holding the exported ONNX model and its README."""
from __future__ import annotations

import re
import zipfile

import pytest

from tests.app_fixtures.server import APP_WAIT_MS, BROWSER_MARKS, chromium, server, shot, wait_idle  # noqa: F401

pytestmark = BROWSER_MARKS
ZIP_BUTTON = re.compile(r"^Download .*\.zip$")            # "Download dld-L1-L2-onnx.zip"


@pytest.fixture(scope="module")
def browser(server):
    with chromium() as b:
        yield b


def test_download_this_model_from_the_budgets_card(server, browser, tmp_path):
    context = browser.new_context(viewport={"width": 1280, "height": 1400}, accept_downloads=True)
    page = context.new_page()
    page.goto(f"{server['url']}/budgets", wait_until="domcontentloaded")
    card = page.locator(".st-key-budget_card")
    card.wait_for(timeout=APP_WAIT_MS)
    wait_idle(page, timeout=APP_WAIT_MS)
    card.get_by_test_id("stExpander").get_by_text("Download this model").click()
    page.locator(".st-key-budget_download_prepare").get_by_role("button", name="Prepare download").click()
    button = page.locator(".st-key-budget_download_download").get_by_role("button", name=ZIP_BUTTON)
    button.wait_for(timeout=APP_WAIT_MS)                       # the export: a few seconds (more on a busy machine)
    wait_idle(page, timeout=APP_WAIT_MS)
    assert page.get_by_test_id("stException").count() == 0
    with page.expect_download(timeout=APP_WAIT_MS) as info:
        button.click()
    download = info.value
    assert download.failure() is None
    assert download.suggested_filename.endswith("-onnx.zip")
    path = tmp_path / download.suggested_filename
    download.save_as(path)
    assert zipfile.is_zipfile(path)
    with zipfile.ZipFile(path) as z:
        assert z.testzip() is None
        names = set(z.namelist())
        assert {"README.md", "model/model.onnx", "model/features.onnx", "model/config.json"} <= names
        assert "onnxruntime" in z.read("README.md").decode()
    shot(page, "budgets_download")
    context.close()


def test_inspect_shows_download_this_model_under_the_strip(server, browser):
    context = browser.new_context(viewport={"width": 1280, "height": 1000})
    page = context.new_page()
    page.goto(f"{server['url']}/inspect", wait_until="domcontentloaded")
    page.locator(".st-key-layer_0").wait_for(timeout=APP_WAIT_MS)
    wait_idle(page, timeout=APP_WAIT_MS)
    section = page.get_by_test_id("stExpander").filter(has_text="Download this model")
    assert section.count() == 1 and section.is_visible()
    section.get_by_text("Download this model").click()
    page.get_by_role("button", name="Prepare download").wait_for(timeout=APP_WAIT_MS)
    assert page.get_by_test_id("stException").count() == 0
    shot(page, "inspect_download")
    context.close()
