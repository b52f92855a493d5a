"""Real-browser checks of issue 22 ("every page tells the truth"), on Whisper-family test models (A1 M1 .. A4 M4):
"/" lands on How DLD works; no page makes a request off the machine (the tab icon was fetched from
fonts.gstatic.com); at 1400 px no text is cut: the GFLOPs delta, the sidebar model pickers, the start-mask chips
of Layer importance, and the labels of the greedy path do not overlap. Screenshots go to test-artifacts/."""
from __future__ import annotations

import json
import shutil
from urllib.parse import urlparse

import pytest

from tests.app_fixtures.server import (APP_WAIT_MS, BROWSER_MARKS, chromium, compute_importance, serve_app, shot,
                                       wait_idle)

pytestmark = BROWSER_MARKS
WIDTH = 1400
LONG = "scratch/teacher"            # a long picker label: "scratch/teacher · Teacher · valid WER 55.0%"

# elements whose text overflows their box (an ellipsis or a clip)
CUT = """(sel) => [...document.querySelectorAll(sel)]
    .filter(e => e.clientWidth > 0 && e.scrollWidth > e.clientWidth + 1).map(e => e.innerText.slice(0, 80))"""
# text labels of one plotly chart whose boxes overlap another's
OVERLAPS = """(chart) => {
    const boxes = [...chart.querySelectorAll('.textpoint text')].map(t => [t.textContent, t.getBoundingClientRect()]);
    const out = [];
    for (let i = 0; i < boxes.length; i++) for (let j = i + 1; j < boxes.length; j++) {
        const [a, r] = boxes[i], [b, s] = boxes[j];
        if (r.width && s.width && r.left < s.right - 1 && s.left < r.right - 1
            && r.top < s.bottom - 1 && s.top < r.bottom - 1)
            out.push(a + '/' + b);
    }
    return out;
}"""


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("app")
    with serve_app(root, family="whisper") as srv:
        for recipe, wer in (("teacher", 0.55), ("dld", 0.70), ("ld", 0.727)):
            (srv["ckpts"][recipe] / "metrics.json").write_text(json.dumps({"best_valid_wer": wer}))
        shutil.copytree(srv["ckpts"]["teacher"], root / "checkpoints" / LONG)
        yield srv


@pytest.fixture(scope="module")
def browser(server):
    with chromium() as b:
        yield b


def goto(page, url: str, title: str) -> None:
    page.goto(url, wait_until="domcontentloaded")
    page.get_by_role("heading", name=title, exact=True).first.wait_for(timeout=APP_WAIT_MS)
    wait_idle(page, timeout=APP_WAIT_MS)


def test_the_root_orients_and_no_request_leaves_the_machine(server, browser):
    context = browser.new_context(viewport={"width": WIDTH, "height": 1000})
    page = context.new_page()
    requests = []
    page.on("request", lambda r: requests.append(r.url))
    goto(page, server["url"], "How DLD works")
    assert page.url.rstrip("/").endswith("/how-it-works")                 # "/" lands on How DLD works
    for name in ("Inspect", "Budgets", "Layer importance", "Train"):      # ... which sends each audience on
        assert page.get_by_test_id("stPageLink").filter(has_text=name).count() >= 1, name
    for path, title in (("inspect", "Inspect"), ("budgets", "Budgets"), ("importance", "Layer importance"),
                        ("train", "Train")):
        goto(page, f"{server['url']}/{path}", title)
    page.wait_for_timeout(1000)
    local = urlparse(server["url"]).netloc
    away = sorted({r for r in requests if urlparse(r).scheme in ("http", "https", "ws", "wss")
                   and urlparse(r).netloc != local})
    assert not away, away                                                  # e.g. fonts.gstatic.com (the tab icon)
    icon = page.evaluate("() => document.querySelector(\"link[rel='shortcut icon']\").href")
    assert icon.startswith("data:") or urlparse(icon).netloc == local, icon
    context.close()


def test_no_text_is_cut_at_1400_px(server, browser):
    context = browser.new_context(viewport={"width": WIDTH, "height": 1200})
    page = context.new_page()
    goto(page, f"{server['url']}/inspect", "Inspect")
    page.locator(".st-key-layer_0").wait_for(timeout=APP_WAIT_MS)
    wait_idle(page, timeout=APP_WAIT_MS)
    teacher_box = page.get_by_test_id("stSidebar").get_by_test_id("stSelectbox").nth(1)
    teacher_box.click()
    page.keyboard.type(LONG)
    page.get_by_role("option").filter(has_text=LONG).first.click()
    wait_idle(page, timeout=APP_WAIT_MS)
    page.locator(".st-key-layer_1 label").first.click()                   # a module off: the GFLOPs delta shows
    wait_idle(page, timeout=APP_WAIT_MS)
    delta = page.get_by_test_id("stMetric").first.get_by_test_id("stMetricDelta")
    assert delta.inner_text().strip().endswith("vs full")
    assert not page.evaluate(CUT, '[data-testid="stMetricDelta"], [data-testid="stMetricDelta"] *, '
                                  '[data-testid="stMetricValue"], [data-testid="stMetricValue"] *')
    pickers = page.get_by_test_id("stSidebar").get_by_test_id("stSelectbox").locator('input[role="combobox"]')
    assert pickers.nth(1).input_value() == f"{LONG} · Teacher · valid WER 55.0%"
    assert not page.evaluate(CUT, '[data-testid="stSidebar"] [data-testid="stSelectbox"] input[role="combobox"]')
    shot(page, "truth_inspect_1400")

    goto(page, f"{server['url']}/importance", "Layer importance")
    page.get_by_test_id("stMultiSelect").nth(1).wait_for(timeout=APP_WAIT_MS)
    page.locator(".st-key-imp_mask_all button").click()                    # every module in the start mask
    wait_idle(page, timeout=APP_WAIT_MS)
    chips = page.get_by_test_id("stMultiSelect").nth(1).locator("[data-tag]")
    assert chips.count() == 8 and chips.nth(7).inner_text().strip() == "M4"
    assert not page.evaluate(CUT, "[data-tag], [data-tag] span[title]")
    last = chips.nth(7).bounding_box()                                     # and inside the box it sits in
    field = page.get_by_test_id("stMultiSelect").nth(1).get_by_test_id("stMultiSelectTagsContainer").bounding_box()
    assert last["x"] + last["width"] <= field["x"] + field["width"] + 0.5
    compute_importance(page)
    charts = page.get_by_test_id("stPlotlyChart")
    charts.nth(2).wait_for(timeout=APP_WAIT_MS)
    wait_idle(page, timeout=APP_WAIT_MS)
    page.wait_for_timeout(1000)
    assert not charts.nth(2).evaluate(OVERLAPS)                            # the greedy path's labels
    assert page.get_by_test_id("stException").count() == 0
    shot(page, "truth_importance_1400")
    context.close()
