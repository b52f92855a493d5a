"""Real-browser checks for researchers: every layer-strip label is whole at 1280, 1400 and 1920 px (a 12-module
student), and the Layer importance page's module labels are not cut off. Screenshots go to test-artifacts/."""
from __future__ import annotations

import pytest

from tests import app_fixtures as fx
from tests.app_fixtures.server import (APP_WAIT_MS, BROWSER_MARKS, STRIP_LABELS, TICKS, WHOLE, chromium,
                                       compute_importance, serve_app, shot, wait_idle)

pytestmark = BROWSER_MARKS
WIDTHS = (1280, 1400, 1920)
DEEP = "deep/dld"                               # a 12-module student (L1 .. L12): the strip's widest case


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("app")
    fx.make_checkpoints(root / "checkpoints" / "deep", n_layers=12)
    with serve_app(root) as srv:
        yield srv


@pytest.fixture(scope="module")
def browser(server):
    with chromium() as b:
        yield b


def open_inspect(page, url: str) -> None:
    page.goto(url, wait_until="domcontentloaded")
    page.get_by_test_id("stSidebarNav").wait_for(timeout=APP_WAIT_MS)
    wait_idle(page)
    strip = page.locator(".st-key-layer_0")
    if strip.count() == 0:                      # Inspect is not the default page
        page.get_by_test_id("stSidebarNav").get_by_role("link", name="Inspect").click()
    strip.wait_for(timeout=APP_WAIT_MS)
    wait_idle(page)


def pick_student(page, name: str) -> None:
    page.get_by_test_id("stSidebar").get_by_test_id("stSelectbox").first.click()
    page.keyboard.type(name)
    page.get_by_role("option").filter(has_text=name).first.click()
    wait_idle(page)


@pytest.mark.parametrize("width", WIDTHS)
def test_every_strip_label_is_whole(server, browser, width):
    context = browser.new_context(viewport={"width": width, "height": 1200})
    page = context.new_page()
    open_inspect(page, f"{server['url']}/inspect")
    pick_student(page, DEEP)
    page.locator(".st-key-layer_11").wait_for(timeout=APP_WAIT_MS)
    wait_idle(page)
    labels = page.evaluate(STRIP_LABELS, 12)
    assert [x["name"] for x in labels] == [f"L{i}" for i in range(1, 13)]
    for x in labels:
        assert x["text"] == x["name"], x                    # the full name, no ellipsis
        assert x["scroll"] <= x["client"], x                # nothing overflows (clipped) ...
        assert x["inside"], x                               # ... or sticks out of its switch
    # the preset buttons are whole too
    for key in ("preset_all", "preset_every_other", "preset_first_k", "preset_only_k", "preset_best_k"):
        assert page.locator(f".st-key-{key} button").evaluate_all(WHOLE), key
    assert page.get_by_test_id("stException").count() == 0
    shot(page, f"strip_{width}")
    context.close()


@pytest.mark.parametrize("width", (1280, 1920))
def test_importance_labels_are_whole(server, browser, width):
    context = browser.new_context(viewport={"width": width, "height": 2000})
    page = context.new_page()
    page.goto(f"{server['url']}/importance", wait_until="domcontentloaded")
    page.get_by_test_id("stMultiSelect").first.wait_for(timeout=APP_WAIT_MS)
    wait_idle(page)
    compute_importance(page)
    charts = page.get_by_test_id("stPlotlyChart")
    charts.nth(2).wait_for(timeout=APP_WAIT_MS)
    wait_idle(page)
    page.wait_for_timeout(1000)                               # plotly lays out (automargin) after drawing
    for i in (0, 1):                                          # ΔWER and ΔKL bars
        ticks = [t for t in charts.nth(i).evaluate(TICKS) if t["axis"] == "x"]
        assert [t["text"] for t in ticks] == ["L1", "L2", "L3", "L4"], ticks
        assert all(t["inside"] for t in ticks), ticks
    assert page.get_by_text("A bar below zero means dropping the module helped").count() == 1
    assert page.locator(".st-key-imp_open_0 button").evaluate_all(WHOLE)
    assert page.get_by_test_id("stException").count() == 0
    shot(page, f"importance_{width}")
    context.close()
