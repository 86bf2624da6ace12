"""The app, rendered by Streamlit's AppTest against a real database."""

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from woe_core import bootstrap, overview

APP = str(Path(__file__).resolve().parent.parent / "app.py")


@pytest.fixture
def app_env(monkeypatch, certified_engine):
    monkeypatch.setenv("WOE_DATABASE_URL", certified_engine.url.render_as_string(hide_password=False))
    return certified_engine


def _run():
    at = AppTest.from_file(APP, default_timeout=60)
    at.run()
    assert not at.exception, at.exception
    return at


def test_home_shows_database_counts_and_fresh_certification(app_env):
    at = _run()
    metrics = {m.label: m.value for m in at.metric}
    with app_env.connect() as conn:
        snapshots = conn.exec_driver_sql("SELECT count(*) FROM ml.socio_market_snapshots").scalar_one()
    assert metrics["Snapshots"] == f"{snapshots:,}"
    assert metrics["Models"] == "0"
    assert any(c.value.startswith("Exact row counts") for c in at.caption)
    assert any("Certified" in s.value and "test-certifier" in s.value for s in at.success)
    assert any("server" in c.value for c in at.caption)


def _number(text: str) -> int:
    return int(text.removeprefix("≈ ").replace(",", ""))


def test_home_counts_above_the_exact_limit_are_marked_estimates(monkeypatch, app_env):
    monkeypatch.setattr(overview, "EXACT_BELOW", 10)  # as if the stores were large: no count on a visit
    with app_env.connect() as conn:
        exact = conn.exec_driver_sql(
            "SELECT (SELECT count(*) FROM ml.socio_market_snapshots), (SELECT count(*) FROM ml.iphone_image_features), "
            "(SELECT count(DISTINCT listing_id) FROM ml.socio_market_snapshots)"
        ).one()
    at = _run()
    metrics = {m.label: m.value for m in at.metric}
    # certified and unchanged since: the certification's own row count, exact
    assert metrics["Snapshots"] == f"{exact[0]:,}"
    assert metrics["Image rows"].startswith("≈ ") and metrics["Listings"].startswith("≈ ")
    assert abs(_number(metrics["Image rows"]) - exact[1]) <= 0.05 * exact[1]
    assert abs(_number(metrics["Listings"]) - exact[2]) <= 0.25 * exact[2]
    assert any("planner's estimates" in c.value and "Snapshots: exact" in c.value for c in at.caption)

    with app_env.begin() as conn:  # a write after the certification: the snapshot count is an estimate too
        conn.exec_driver_sql(
            "DELETE FROM ml.iphone_image_features WHERE listing_id = (SELECT min(listing_id) FROM ml.iphone_image_features)"
        )
    at = _run()
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Snapshots"].startswith("≈ ")
    assert abs(_number(metrics["Snapshots"]) - exact[0]) <= 0.05 * exact[0]
    assert not any("Snapshots: exact" in c.value for c in at.caption)


def test_home_says_when_live_scores_are_refused(monkeypatch, demo_engine):
    monkeypatch.setenv("WOE_DATABASE_URL", demo_engine.url.render_as_string(hide_password=False))
    at = _run()
    assert any("never certified" in e.value for e in at.error)


def test_unreachable_database_is_an_error_message_not_a_traceback(monkeypatch):
    monkeypatch.setenv("WOE_DATABASE_URL", "postgresql://nobody@127.0.0.1:1/nowhere")
    at = AppTest.from_file(APP, default_timeout=60)
    at.run()
    assert not at.exception
    assert any("cannot connect to PostgreSQL at" in e.value and "127.0.0.1:1" in e.value for e in at.error)


def test_first_start_without_a_database_url_runs_embedded_with_certified_demo(monkeypatch, tmp_path):
    monkeypatch.delenv("WOE_DATABASE_URL", raising=False)
    monkeypatch.setenv("WOE_DATA_DIR", str(tmp_path / "data"))
    at = _run()
    assert any("embedded PostgreSQL" in c.value for c in at.caption)
    metrics = {m.label: m.value for m in at.metric}
    assert int(metrics["Listings"].replace(",", "")) == 20_000
    assert any("Certified" in s.value for s in at.success)
    # the demo arrives with a baseline model, promoted through the normal promotion
    assert metrics["Models"] == "1"
    assert any("active since" in m.value and "tom_aft_v1_" in m.value for m in at.markdown)
    at.switch_page("pages/promote.py").run()
    assert not at.exception, at.exception
    history = at.dataframe[-1].value
    assert list(history["reason"]) == [bootstrap.DEMO_BASELINE_REASON]
