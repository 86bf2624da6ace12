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
from conftest import CITUS_TARGET

from woe_core import compare, registry, score

pytestmark = pytest.mark.browser
# On the cluster (WOE_TEST_TARGET=citus) the pages, a lookup and a promotion run in the browser; the
# tests of widget behaviour alone do not depend on the database and run on one node only.
same_on_every_server = pytest.mark.skipif(
    CITUS_TARGET,
    reason="widget behaviour, independent of the database: run on one node (tests/test_pages.py covers the cluster)",
)
ROOT = Path(__file__).resolve().parent.parent
SHOTS = ROOT / "artifacts" / "screenshots"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-sync",
    "--disable-background-networking",
    "--disable-component-update",
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serve(env_extra: dict | None = None, drop: tuple[str, ...] = ()):
    port = _free_port()
    env = {**os.environ, "STREAMLIT_BROWSER_GATHER_USAGE_STATS": "false", **(env_extra or {})}
    for name in drop:
        env.pop(name, None)
    SHOTS.mkdir(parents=True, exist_ok=True)
    log = open(SHOTS.parent / f"streamlit-{port}.log", "w")  # noqa: SIM115 - closed in the finally below
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "streamlit",
            "run",
            str(ROOT / "app.py"),
            "--server.headless",
            "true",
            "--server.address",
            "127.0.0.1",
            "--server.port",
            str(port),
        ],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
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
def app_url(two_models):
    yield from _serve()


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
    _settle(page)


def _settle(page) -> None:
    """Wait until the rerun a widget change started has finished."""
    page.wait_for_selector('[data-test-script-state="notRunning"]')
    page.wait_for_timeout(400)
    page.wait_for_selector('[data-test-script-state="notRunning"]')


def _choose(page, label: str, option: str) -> None:
    """Pick ``option`` (its full text) in the selectbox or multiselect labelled ``label``."""
    page.get_by_label(label).click()
    page.get_by_role("option", name=option, exact=True).click()
    _settle(page)


def _overflowing_tables(page) -> list[list[str]]:
    """Per st.dataframe on the page, its inner elements that scroll sideways (empty lists: all columns visible)."""
    page.wait_for_timeout(1000)
    return page.evaluate("""() => [...document.querySelectorAll('[data-testid="stDataFrame"]')]
        .map(df => [...df.querySelectorAll('*')].filter(e => ['auto', 'scroll'].includes(getComputedStyle(e).overflowX)
                                                             && e.scrollWidth > e.clientWidth + 2)
                                                .map(e => `${e.className} ${e.scrollWidth}>${e.clientWidth}`))""")


def _query(page) -> dict[str, str]:
    from urllib.parse import parse_qs, urlparse

    return {k: v[0] for k, v in parse_qs(urlparse(page.url).query).items()}


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
    titles = {
        "": "WOE anchor model",
        "train": "Train a candidate",
        "compare": "Compare models",
        "promote": "Promote a model",
        "certification": "Data certification",
        "lookup": "Score lookup",
    }
    for path, title in titles.items():
        _open(page, f"{app_url}/{path}")
        page.get_by_role("heading", name=title).first.wait_for()
        assert page.locator('[data-testid="stException"]').count() == 0, path
        page.screenshot(path=SHOTS / f"page-{path or 'home'}.png", full_page=True)


@pytest.fixture
def three_models(two_models):
    """two_models plus a third candidate (by dora), so a select can alternate between candidates."""
    from datetime import UTC, datetime

    from woe_core import train

    engine, first, second = two_models
    third = train.train(engine, train.TrainParams(datetime(2026, 7, 1, tzinfo=UTC), 30.0, 0.5, 2), "dora").model_key
    return engine, first, second, third


@same_on_every_server
def test_lookup_keeps_five_ids_in_a_row_and_the_url_follows(page, app_url, two_models):
    engine, first, second = two_models
    with engine.connect() as conn:
        ids = [
            int(x)
            for x in conn.execute(
                sa.text("SELECT DISTINCT listing_id FROM ml.socio_market_snapshots ORDER BY 1 LIMIT 6")
            ).scalars()
        ]
    _open(page, f"{app_url}/lookup")
    box = page.get_by_label("Listing id")
    for listing in ids:
        box.fill(str(listing))
        box.press("Enter")
        _settle(page)
        page.get_by_role("heading", name=f"Snapshots of listing {listing}").wait_for()
        assert box.input_value() == str(listing)
        assert _query(page)["listing"] == str(listing)
    labels = compare.short_labels(list(registry.list_models(engine)["model_key"]))
    _choose(page, "Also score under candidate", f"{labels[second]} — {second}")
    assert _query(page) == {"listing": str(ids[-1]), "model": second}
    page.get_by_role("heading", name="Candidate").wait_for()
    copied = page.url
    page.screenshot(path=SHOTS / "lookup-with-candidate.png", full_page=True)
    _open(page, copied)  # a copied link reopens the same view
    assert page.get_by_label("Listing id").input_value() == str(ids[-1])
    page.get_by_role("heading", name="Candidate").wait_for()
    legend = page.locator('[data-testid="stVegaLiteChart"]').first.text_content()
    assert "raises p_slow21" in legend and "lowers p_slow21" in legend, legend
    assert not any(_overflowing_tables(page)), _overflowing_tables(page)  # the candidate's WOE columns too


@same_on_every_server
def test_lookup_offers_a_random_and_the_newest_listings(page, app_url, two_models):
    engine, first, second = two_models
    _open(page, f"{app_url}/lookup")
    page.get_by_text("pick one of the newest").first.wait_for()
    page.get_by_role("button", name="Random listing").click()
    _settle(page)
    drawn = int(page.get_by_label("Listing id").input_value())
    assert drawn > 0 and _query(page)["listing"] == str(drawn)
    page.get_by_role("heading", name=f"Snapshots of listing {drawn}").wait_for()
    assert "no snapshot" not in page.inner_text("body")


@same_on_every_server
def test_promote_candidate_select_keeps_five_choices_in_a_row(page, app_url, three_models):
    engine, first, second, third = three_models
    labels = compare.short_labels(list(registry.list_models(engine)["model_key"]))
    _open(page, f"{app_url}/promote")
    for key in (second, third, second, third, second, third):
        _choose(page, "Candidate", f"{labels[key]} — {key}")
        page.get_by_text(f"Artifact digest of {key}").wait_for()
        assert _query(page)["model"] == key
        assert page.get_by_label("Candidate").input_value() == f"{labels[key]} — {key}"


@same_on_every_server
def test_compare_multiselect_keeps_five_changes_in_a_row(page, app_url, three_models):
    engine, first, second, third = three_models
    labels = compare.short_labels(list(registry.list_models(engine)["model_key"]))
    _open(page, f"{app_url}/compare?models={first},{second}")
    select = page.locator('[data-testid="stMultiSelect"]').first

    def chips() -> list[str]:
        return [c.split(" — ")[-1] for c in select.locator("[data-tag]").all_inner_texts()]

    def remove(key: str) -> None:
        select.get_by_role("button", name=f"Remove {labels[key]} — {key}", exact=True).click()
        _settle(page)

    def add(key: str) -> None:
        select.get_by_role("combobox").click()
        page.get_by_role("option", name=f"{labels[key]} — {key}", exact=True).click()
        page.keyboard.press("Escape")
        _settle(page)

    expected = [first, second]
    for action, key in (
        ("remove", second),
        ("add", third),
        ("add", second),
        ("remove", third),
        ("remove", second),
        ("add", second),
    ):
        (remove if action == "remove" else add)(key)
        expected = [k for k in expected if k != key] if action == "remove" else expected + [key]
        assert chips() == expected, (action, key)
        assert _query(page)["models"] == ",".join(expected)
    page.get_by_text("the same for every model").first.wait_for()
    page.screenshot(path=SHOTS / "compare-common-window.png", full_page=True)


@same_on_every_server
def test_compare_is_readable_at_1400_px(page, app_url, two_models):
    engine, first, second = two_models
    labels = compare.short_labels(list(registry.list_models(engine)["model_key"]))
    _open(page, f"{app_url}/compare?models={first},{second}")
    page.get_by_text("the same for every model").first.wait_for()
    body = page.inner_text("body")
    assert f"{labels[first]} = {first}" in body and f"{labels[second]} = {second}" in body
    # the key tables (common window, stored metrics, WOE by band) need no horizontal scrolling
    page.locator('[data-testid="stDataFrame"]').nth(4).wait_for()
    page.wait_for_timeout(1000)
    overflow = page.evaluate("""() => [...document.querySelectorAll('[data-testid="stDataFrame"]')].slice(0, 3)
        .map(df => [...df.querySelectorAll('*')].filter(e => ['auto', 'scroll'].includes(getComputedStyle(e).overflowX)
                                                             && e.scrollWidth > e.clientWidth + 2)
                                                .map(e => `${e.className} ${e.scrollWidth}>${e.clientWidth}`))""")
    page.screenshot(path=SHOTS / "compare-1400.png", full_page=True)
    assert overflow == [[], [], []], overflow
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    legends = page.locator('[data-testid="stVegaLiteChart"]').first.text_content()
    assert labels[first] in legends and labels[second] in legends, legends
    page.get_by_text("value(s) highlighted").wait_for()
    page.screenshot(path=SHOTS / "compare-1400.png", full_page=True)


@same_on_every_server
def test_train_refuses_a_cutoff_it_cannot_use_and_names_what_it_used(page, app_url, two_models):
    engine, first, second = two_models
    before = set(registry.list_models(engine)["model_key"])
    _open(page, f"{app_url}/train")

    def type_date(year: str, month: str, day: str) -> None:
        for part, value in (("year", year), ("month", month), ("day", day)):
            page.get_by_role("spinbutton", name=f"{part}, Cutoff (train_cutoff_ts, 00:00 UTC)").click()
            page.keyboard.type(value)
        page.keyboard.press("Escape")

    type_date("2030", "01", "01")
    page.get_by_role("button", name="Train candidate").click()
    _settle(page)
    page.get_by_text("train_cutoff_ts must be").wait_for()
    assert "2030-01-01" in page.inner_text("body")
    assert set(registry.list_models(engine)["model_key"]) == before
    type_date("2026", "08", "01")
    page.get_by_role("button", name="Train candidate").click()
    page.get_by_text("Trained with cutoff 2026-08-01T00:00:00+00:00").wait_for(timeout=120_000)
    new = set(registry.list_models(engine)["model_key"]) - before
    assert len(new) == 1
    page.screenshot(path=SHOTS / "train-done.png", full_page=True)
    page.get_by_role("link", name="Promote this candidate").click()
    _settle(page)
    page.get_by_text(f"Artifact digest of {new.pop()}").wait_for()


@same_on_every_server
def test_promote_with_a_failed_advisory_check_needs_an_acknowledgement(page, app_url, two_models):
    from woe_core import promote, reviewer

    engine, first, second = two_models  # first is active
    if reviewer.metrics_vs_active(engine, second, first).passed:
        promote.promote(engine, second, "carol", "the stronger model")
        weak = first
    else:
        weak = second
    _open(page, f"{app_url}/promote?model={weak}")
    page.get_by_text("Advisory check(s) failed: metrics_vs_active").wait_for()
    page.locator('[data-testid="stDataFrame"]').nth(2).wait_for()
    assert not any(_overflowing_tables(page)), _overflowing_tables(page)  # checklist, common window, history
    page.get_by_role("button", name="Promote…").click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_label("Reason (required)").fill("weaker, but needed for the test")
    confirm = dialog.get_by_role("button", name="Promote", exact=True)
    assert confirm.is_disabled()
    dialog.get_by_text("I acknowledge that metrics_vs_active failed").click()
    _settle(page)
    page.screenshot(path=SHOTS / "promote-acknowledge.png")
    dialog.get_by_role("button", name="Promote", exact=True).click()
    page.get_by_text("is now the active model").wait_for()
    _settle(page)
    assert registry.active_model_key(engine) == weak
    body = page.inner_text("body")
    assert "acknowledged: metrics_vs_active" in body and "No candidate to promote" not in body
    assert body.index("is now the active model") < body.index("History")
    assert "model" not in _query(page)
    page.screenshot(path=SHOTS / "promote-after.png", full_page=True)


@same_on_every_server
def test_certify_now_updates_the_banner_without_a_reload(page, app_url, two_models):
    _open(page, f"{app_url}/certification")
    page.get_by_text("Fresh: #1").first.wait_for()
    page.get_by_role("button", name="Certify now").first.click()
    page.get_by_text("Fresh: #2 by reviewer-1").first.wait_for(timeout=60_000)
    assert "Fresh: #1" not in page.inner_text("body")
    assert not any(_overflowing_tables(page)), _overflowing_tables(page)  # same_code on screen


@pytest.fixture
def fresh_app_url(tmp_path):
    yield from _serve({"WOE_DATA_DIR": str(tmp_path / "data"), "WOE_ACTOR": "newcomer"}, drop=("WOE_DATABASE_URL",))


@same_on_every_server
def test_a_new_user_sees_a_scored_listing_at_once(page, fresh_app_url):
    _open(page, f"{fresh_app_url}/lookup")
    page.get_by_role("heading", name="Score lookup").wait_for(timeout=180_000)
    _settle(page)
    page.get_by_role("button", name="Random listing").click()
    _settle(page)
    page.locator('[data-testid="stMetric"]', has_text="p_slow21").first.wait_for()
    assert "no snapshot" not in page.inner_text("body") and "no model is active" not in page.inner_text("body")
    _open(page, fresh_app_url)
    page.get_by_text("promoted by newcomer").first.wait_for()
    page.screenshot(path=SHOTS / "first-run-promote.png", full_page=True)


@same_on_every_server
def test_delete_a_candidate_and_the_page_follows_at_once(page, app_url, two_models):
    engine, first, second = two_models
    _open(page, f"{app_url}/promote?model={second}")
    page.get_by_role("button", name="Delete candidate…").click()
    page.get_by_role("dialog").get_by_role("button", name="Delete", exact=True).click()
    page.get_by_text(f"Deleted candidate {second}").wait_for()
    _settle(page)
    body = page.inner_text("body")
    assert body.index("Deleted candidate") < body.index("No candidate to promote") < body.index("History")
    assert second not in set(registry.list_models(engine)["model_key"]) and "model" not in _query(page)
