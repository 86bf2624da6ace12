"""Sign-in for real: Streamlit's st.login against an OpenID Connect provider, in headless Chromium.

The provider is the PyPI package ``oidc-provider-mock`` started here on 127.0.0.1 with
two users; the app gets its ``[auth]`` section from a secrets.toml written into a
temporary folder (Streamlit's documented ``secrets.files`` option), with
``WOE_PROMOTERS`` naming only alice and ``WOE_FOUR_EYES`` on.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import urllib.request
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa
from test_browser import CHROMIUM, CHROMIUM_ARGS, ROOT, SHOTS, _free_port, _open

from woe_core import registry, train

pytestmark = pytest.mark.browser
ALICE, BOB = "alice@example.test", "bob@example.test"


def _wait_for(url: str, proc: subprocess.Popen, what: str) -> None:
    for _ in range(240):
        if proc.poll() is not None:
            pytest.fail(f"{what} exited with code {proc.returncode}")
        try:
            urllib.request.urlopen(url, timeout=1).read()
            return
        except OSError:
            time.sleep(0.25)
    pytest.fail(f"{what} did not answer {url} within 60 s")


@pytest.fixture
def provider(tmp_path):
    pytest.importorskip("oidc_provider_mock", reason="oidc-provider-mock is not installed (requirements.txt)")
    port = _free_port()
    users = [
        json.dumps({"sub": name.split("@")[0], "email": name, "name": name.split("@")[0].title()})
        for name in (ALICE, BOB)
    ]
    log = open(tmp_path / "provider.log", "w")  # noqa: SIM115 - closed in the finally below
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "oidc_provider_mock",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            *[arg for u in users for arg in ("--user-claims", u)],
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_for(f"{url}/.well-known/openid-configuration", proc, "the OpenID Connect provider")
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


@pytest.fixture
def signin_app(two_models, provider, tmp_path, login, monkeypatch):
    """The app behind its sign-in, logged in to the database as a member of every project role and of
    woe_sso (so the database takes its signed-in users as the identities, as in a deployment)."""
    engine, first, second = two_models
    app_login = login("woe_reader", "woe_trainer", "woe_certifier", "woe_promoter", "woe_sso")
    monkeypatch.setenv("WOE_DATABASE_URL", app_login.url.render_as_string(hide_password=False))
    port = _free_port()
    app_url = f"http://127.0.0.1:{port}"
    secrets = tmp_path / "secrets.toml"
    secrets.write_text(
        f'WOE_PROMOTERS = "{ALICE}"\n'
        'WOE_FOUR_EYES = "1"\n'
        "[auth]\n"
        f'redirect_uri = "{app_url}/oauth2callback"\n'
        'cookie_secret = "a-test-cookie-secret-of-32-characters"\n'
        'client_id = "woe-review-app"\n'
        'client_secret = "a-test-client-secret"\n'
        f'server_metadata_url = "{provider}/.well-known/openid-configuration"\n'
    )
    SHOTS.mkdir(parents=True, exist_ok=True)
    log = open(SHOTS.parent / f"streamlit-signin-{port}.log", "w")  # noqa: SIM115 - closed in the finally below
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
            "--secrets.files",
            str(secrets),
        ],
        cwd=ROOT,
        env={**os.environ, "STREAMLIT_BROWSER_GATHER_USAGE_STATS": "false"},
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        _wait_for(f"{app_url}/_stcore/health", proc, "the app")
        yield app_url, app_login, first, second
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


@pytest.fixture
def page():
    if CHROMIUM is None:
        pytest.skip("Debian's chromium is not installed (apt-get install chromium); .ci/run installs it")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        pg = browser.new_page(viewport={"width": 1400, "height": 1200})
        pg.set_default_timeout(60_000)
        yield pg
        browser.close()


def _sign_in(page, app_url: str, sub: str) -> None:
    """From a page showing the sidebar's Sign in button, through the provider's form, back to the app."""
    page.locator('[data-testid="stSidebar"]').get_by_role("button", name="Sign in").click()
    page.wait_for_url(lambda url: "/oauth2/authorize" in url)
    page.get_by_role("button", name=sub, exact=True).click()  # the provider's button of a predefined user
    page.wait_for_url(re.compile(re.escape(app_url) + r"/?$"), wait_until="load")  # Streamlit's callback sends us home
    page.wait_for_selector('[data-test-script-state="notRunning"]')


def _checklist_text(page) -> str:
    return page.locator('[data-testid="stDataFrame"]').first.text_content() or ""


def test_sign_in_promoters_four_eyes_and_sign_out(page, signin_app):
    app_url, engine, first, second = signin_app
    own = train.train(engine, train.TrainParams(datetime(2026, 8, 1, tzinfo=UTC), 90.0, 1.0, 2), ALICE).model_key

    _open(page, f"{app_url}/promote?model={second}")
    page.get_by_text("Sign in to promote.").wait_for()

    # bob signs in: he is who the app shows, but not a promoter
    _sign_in(page, app_url, "bob")
    _open(page, f"{app_url}/promote?model={second}")
    page.get_by_text(f"Signed in as {BOB}").first.wait_for()
    page.get_by_text(f"{BOB} is not in the configured promoters list (WOE_PROMOTERS)").wait_for()
    assert page.get_by_role("button", name="Promote…").is_disabled()
    page.screenshot(path=SHOTS / "signin-not-a-promoter.png", full_page=True)

    # sign out: the app asks for a sign-in again
    home = re.compile(re.escape(app_url) + r"/?$")
    page.locator('[data-testid="stSidebar"]').get_by_role("button", name="Sign out").click()
    page.wait_for_url(lambda url: "/oauth2/end_session" in url or home.match(url) is not None)
    if "/oauth2/end_session" in page.url:  # newer Streamlit also ends the session at the provider
        page.get_by_role("button", name="End session").click()
    page.wait_for_url(home, wait_until="load")
    _open(page, f"{app_url}/promote?model={second}")
    page.get_by_text("Sign in to promote.").wait_for()
    assert page.get_by_text(f"Signed in as {BOB}").count() == 0

    # alice signs in: a promoter, but four-eyes refuses the model she trained herself
    _sign_in(page, app_url, "alice")
    _open(page, f"{app_url}/promote?model={own}")
    page.get_by_text(f"Signed in as {ALICE}").first.wait_for()
    checklist = _checklist_text(page)
    assert (
        "four_eyes" in checklist and f"trained by sso:{ALICE} (declared {ALICE}), promoting as sso:{ALICE}" in checklist
    ), checklist
    button = page.get_by_role("button", name="Promote…")
    assert button.is_disabled()
    page.screenshot(path=SHOTS / "signin-four-eyes.png", full_page=True)

    # ... and promotes bob's model, recorded under her signed-in identity
    _open(page, f"{app_url}/promote?model={second}")
    page.get_by_role("button", name="Promote…").click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_label("Reason (required)").fill("signed-in promotion")
    dialog.get_by_role("button", name="Promote", exact=True).click()
    page.get_by_text("is now the active model").wait_for()
    assert registry.active_model_key(engine) == second
    with engine.connect() as conn:
        actor = conn.execute(
            sa.text("SELECT actor FROM ml.woe_anchor_promotions_v1 ORDER BY promotion_id DESC LIMIT 1")
        ).scalar_one()
    assert actor == ALICE
