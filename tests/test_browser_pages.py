"""Every page in a real browser at 1280 and 1920 px: it renders without an exception or "Page not found",
no text in the layer strip or in a chart's axis labels is cut off, and a full-page screenshot of each goes to
test-artifacts/pages_<page>_<width>.png (what the README's screenshots are chosen from)."""
from __future__ import annotations

import pytest

from tests.app_fixtures.server import (APP_WAIT_MS, BROWSER_MARKS, STRIP_LABELS, TICKS, chromium,  # noqa: F401
                                       compute_importance, server, shot, wait_idle)

pytestmark = BROWSER_MARKS
WIDTHS = (1280, 1920)
# url path -> the title it shows and how many charts it draws once ready (Layer importance after Compute)
PAGES = {"how-it-works": ("How DLD works", 0), "inspect": ("Inspect", 3), "budgets": ("Budgets", 1),
         "importance": ("Layer importance", 3), "train": ("Train", 0)}


@pytest.fixture(scope="module")
def browser(server):
    with chromium() as b:
        yield b


def open_page(page, url: str, title: str, charts: int) -> None:
    page.goto(url, wait_until="domcontentloaded")
    page.get_by_role("heading", name=title, exact=True).first.wait_for(timeout=APP_WAIT_MS)
    wait_idle(page, timeout=APP_WAIT_MS)
    if title == "Layer importance":
        compute_importance(page)
    if charts:
        page.get_by_test_id("stPlotlyChart").nth(charts - 1).wait_for(timeout=APP_WAIT_MS)
        wait_idle(page)
    page.wait_for_timeout(1000)                          # plotly lays out (automargin) after drawing


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("name", list(PAGES))
def test_page_renders_whole(server, browser, name, width):
    title, charts = PAGES[name]
    context = browser.new_context(viewport={"width": width, "height": 1000})
    page = context.new_page()
    open_page(page, f"{server['url']}/{name}", title, charts)
    assert page.get_by_test_id("stException").count() == 0
    assert page.get_by_text("Page not found").count() == 0
    drawn = page.get_by_test_id("stPlotlyChart")
    assert drawn.count() >= charts
    for i in range(drawn.count()):
        ticks = drawn.nth(i).evaluate(TICKS)
        cut = [t for t in ticks if not t["inside"]]
        assert not cut, (name, i, cut)
    strip = page.locator(".st-key-layer_0")
    if strip.count():                                    # the layer strip: every label whole
        n = 1
        while page.locator(f".st-key-layer_{n}").count():
            n += 1
        labels = page.evaluate(STRIP_LABELS, n)
        assert labels and all(x["text"] == x["name"] and x["scroll"] <= x["client"] and x["inside"]
                              for x in labels), labels
    assert name != "inspect" or strip.count() == 1       # Inspect shows the strip
    shot(page, f"pages_{name}_{width}")
    context.close()
