"""Browser tests of the teaching parts (issue 15): a typed /inspect URL opens Inspect without Streamlit's
"Page not found" box, "/" opens How DLD works, and the How DLD works page is in the navigation (first) and
works in a real browser. Screenshots go to test-artifacts/ (git-ignored)."""
from __future__ import annotations

import pytest

from tests.app_fixtures.server import APP_WAIT_MS, BROWSER_MARKS, chromium, server, shot, wait_idle  # noqa: F401 (server: a fixture)

pytestmark = BROWSER_MARKS


@pytest.fixture(scope="module")
def browser(server):
    with chromium() as b:
        yield b


def open_page(browser, url: str, width: int = 1400):
    context = browser.new_context(viewport={"width": width, "height": 1200})
    page = context.new_page()
    page.goto(url, wait_until="domcontentloaded")
    return context, page


def test_a_typed_inspect_url_opens_inspect(server, browser):
    context, page = open_page(browser, f"{server['url']}/inspect")
    page.get_by_test_id("stCode").first.wait_for(timeout=APP_WAIT_MS)       # the transcripts: Inspect has run
    wait_idle(page)
    assert page.get_by_text("Page not found").count() == 0
    assert page.get_by_role("heading", name="Inspect", exact=True).count() == 1
    assert page.url.rstrip("/").endswith("/inspect")
    assert page.get_by_test_id("stException").count() == 0
    shot(page, "teaching_01_typed_inspect_url")

    page.goto(server["url"], wait_until="domcontentloaded")              # the root opens How DLD works
    page.get_by_role("heading", name="How DLD works").wait_for(timeout=APP_WAIT_MS)
    wait_idle(page)
    assert page.get_by_text("Page not found").count() == 0
    assert page.url.rstrip("/").endswith("/how-it-works")
    context.close()


@pytest.mark.parametrize("width", [1280, 1920])
def test_how_dld_works_page(server, browser, width):
    context, page = open_page(browser, f"{server['url']}/how-it-works", width)
    page.get_by_role("heading", name="How DLD works").wait_for(timeout=APP_WAIT_MS)
    page.get_by_text("WER at step ①").wait_for(timeout=APP_WAIT_MS)
    wait_idle(page)
    assert page.get_by_text("Page not found").count() == 0
    nav = [t.strip().splitlines()[-1] for t in page.get_by_test_id("stSidebarNavLink").all_inner_texts()]
    assert nav[:2] == ["How DLD works", "Inspect"], nav
    modules = page.locator(".dld-encoder .dld-mod")
    assert modules.count() == 4 and page.locator(".dld-encoder .dld-skipped").count() == 0
    for i in range(4):                                                   # module labels drawn whole
        box = modules.nth(i)
        assert box.inner_text().splitlines()[0] == f"L{i + 1}"
        assert box.evaluate("e => e.scrollWidth <= e.clientWidth + 1")
    page.get_by_test_id("stButtonGroup").filter(has_text="Full depth").get_by_role(
        "radio", name="Drop half · static teacher").click()
    page.get_by_text("WER at step ②").wait_for(timeout=APP_WAIT_MS)
    wait_idle(page)
    assert page.locator(".dld-encoder .dld-skipped").count() == 2
    assert page.get_by_test_id("stException").count() == 0
    shot(page, f"teaching_02_how_dld_works_{width}")
    context.close()
