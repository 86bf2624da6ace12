"""The main flows in a real headless Chromium (Debian's package, driven by Playwright).

Screenshots of every page land in ``artifacts/screenshots/`` (git-ignored).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import sqlalchemy as sa

from woe_core import registry, score

pytestmark = pytest.mark.browser
ROOT = Path(__file__).resolve().parent.parent
SHOTS = ROOT / "artifacts" / "screenshots"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-sync",
                 "--disable-background-networking", "--disable-component-update"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def app_url(two_models):
    port = _free_port()
    env = {**os.environ, "STREAMLIT_BROWSER_GATHER_USAGE_STATS": "false"}
    SHOTS.mkdir(parents=True, exist_ok=True)
    log = open(SHOTS.parent / f"streamlit-{port}.log", "w")  # noqa: SIM115 - closed in the finally below
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", str(ROOT / "app.py"), "--server.headless", "true",
         "--server.address", "127.0.0.1", "--server.port", str(port)],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(240):
            try:
                if urllib.request.urlopen(f"{url}/_stcore/health", timeout=1).read() == b"ok":
                    break
            except OSError:
                time.sleep(0.25)
        else:
            pytest.fail("the app did not start within 60 s")
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


@pytest.fixture
def page(app_url):
    if CHROMIUM is None:
        pytest.skip("Debian's chromium is not installed (apt-get install chromium); .ci/run installs it")
    from playwright.sync_api import sync_playwright

    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        pg = browser.new_page(viewport={"width": 1400, "height": 1200})
        pg.set_default_timeout(60_000)
        yield pg
        browser.close()


def _open(page, url: str) -> None:
    """Load a page and wait until its script has run to the end."""
    page.goto(url)
    page.wait_for_selector('[data-test-script-state="notRunning"]')
    page.wait_for_timeout(300)
    page.wait_for_selector('[data-test-script-state="notRunning"]')


def test_promote_through_the_dialog_and_see_it_on_home(page, app_url, two_models):
    engine, first, second = two_models
    _open(page, f"{app_url}/promote?model={second}")  # a deep link is the first visit of this server
    page.get_by_role("heading", name="Promote a model").wait_for()
    sidebar = page.locator('[data-testid="stSidebarNav"]').inner_text()
    assert "Data and scores" in sidebar and "Score lookup" in sidebar and "_ui" not in sidebar, sidebar
    page.screenshot(path=SHOTS / "promote-deep-link.png")
    page.get_by_role("button", name="Promote…").click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_label("Reason (required)").fill("better EVAL AUC, checked in the browser")
    page.screenshot(path=SHOTS / "promote-dialog.png")
    dialog.get_by_role("button", name="Promote", exact=True).click()
    page.get_by_text("is now the active model").wait_for()
    assert registry.active_model_key(engine) == second
    _open(page, app_url)
    page.get_by_text(second, exact=True).first.wait_for()
    assert "promoted by reviewer-1" in page.inner_text("body")
    page.screenshot(path=SHOTS / "home-after-promotion.png", full_page=True)


def test_look_up_a_listing_and_see_its_score(page, app_url, two_models):
    engine, first, second = two_models
    with engine.connect() as conn:
        listing = conn.execute(sa.text("SELECT min(listing_id) FROM ml.socio_market_snapshots")).scalar_one()
    expected = score.lookup(engine, int(listing)).iloc[-1]  # the latest snapshot is explained first
    _open(page, f"{app_url}/lookup?listing={listing}")
    # exact: the snapshot table also holds the unrounded numbers, in cells a browser may keep hidden
    page.get_by_text(f"{expected['woe_anchor_p_slow21']:.4f}", exact=True).first.wait_for()
    page.get_by_text(f"{expected['woe_logit']:+.4f}", exact=True).first.wait_for()
    page.screenshot(path=SHOTS / "lookup.png", full_page=True)


def test_every_page_renders_without_an_exception(page, app_url):
    titles = {"": "WOE anchor model", "train": "Train a candidate", "compare": "Compare models",
              "promote": "Promote a model", "certification": "Data certification", "lookup": "Score lookup"}
    for path, title in titles.items():
        _open(page, f"{app_url}/{path}")
        page.get_by_role("heading", name=title).first.wait_for()
        assert page.locator('[data-testid="stException"]').count() == 0, path
        page.screenshot(path=SHOTS / f"page-{path or 'home'}.png", full_page=True)
