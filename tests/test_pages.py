"""Every page through Streamlit's AppTest on a real database, asserting on what it shows."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import sqlalchemy as sa
from conftest import DATA_CHANGED, change_first_listing
from streamlit.testing.v1 import AppTest

from modelkit import break_glass
from woe_core import compare, jobs, promote, registry, score
from woe_core.display import markdown_text

APP = str(Path(__file__).resolve().parent.parent / "app.py")


def _page(name: str, query: dict | None = None) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=120)
    at.query_params.update(query or {})
    at.switch_page(f"pages/{name}.py")
    at.run()
    assert not at.exception, at.exception
    return at


def _texts(at) -> str:
    return "\n".join(
        [m.value for m in at.markdown]
        + [c.value for c in at.caption]
        + [s.value for s in at.success]
        + [e.value for e in at.error]
        + [i.value for i in at.info]
        + [w.value for w in at.warning]
    )


def test_home_shows_active_model_and_candidates(two_models):
    engine, first, second = two_models
    at = _page("home")
    assert f"**`{first}`**" in _texts(at) and "promoted by carol" in _texts(at)
    assert list(at.dataframe[0].value["model_key"]) == [second]


def test_train_creates_a_candidate(two_models):
    engine, first, second = two_models
    at = _page("train")
    at.number_input[1].set_value(3)  # folds
    at.button[0].click().run()
    assert not at.exception, at.exception
    job_id = at.session_state["train_job"]
    job = jobs.RUNNER.wait(job_id, timeout=120)
    assert job.status == "done", job.error
    assert job.model_key in set(registry.list_models(engine)["model_key"])
    at.run()
    assert f"Run #{job_id} done: {job.model_key}" in _texts(at)


def test_train_rejects_bad_thresholds_with_a_message(two_models):
    at = _page("train")
    at.number_input[3].set_value(0.2)  # t1 above t2
    at.button[0].click().run()
    assert not at.exception
    assert any("dsold_thresholds must be four finite numbers, strictly increasing" in e.value for e in at.error)
    assert "train_job" not in at.session_state


def test_compare_lists_both_models_woe_for_every_band(two_models):
    engine, first, second = two_models
    at = _page("compare", {"models": f"{first},{second}"})
    assert at.multiselect[0].value == [first, second]
    assert list(at.dataframe[1].value["model_key"]) == [first, second]  # stored metrics, each its own window
    labels = compare.short_labels(list(registry.list_models(engine)["model_key"]))
    with engine.connect() as conn:
        stored = {
            (k, b, v): w
            for k, b, v, w in conn.execute(
                sa.text("SELECT model_key, band_name, band_value, woe FROM ml.woe_anchor_map_v1 WHERE fold_id IS NULL")
            )
        }
    seen = 0
    for band in ["dsold", "trust", "ship", "sale", "cond", "dmg", "bat", "present", "vdmg", "acc"]:
        at.radio(key="band").set_value(band).run()
        assert not at.exception
        table = at.dataframe[2].value
        for row in table.to_dict("records"):
            for key in (first, second):
                if (key, band, row["band_value"]) in stored:
                    assert row[f"woe {labels[key]}"] == pytest.approx(stored[(key, band, row["band_value"])])
                    seen += 1
            if (first, band, row["band_value"]) in stored and (second, band, row["band_value"]) in stored:
                assert row[f"Δ {labels[second]}"] == pytest.approx(
                    stored[(second, band, row["band_value"])] - stored[(first, band, row["band_value"])]
                )
    assert seen == len(stored)


def test_certification_page_shows_status_and_flags_other_code(two_models):
    engine, first, second = two_models
    with engine.begin() as conn:  # the owner's recorded break-glass stands in for a model trained by other code
        break_glass(conn, "test: pretend other code trained it", second)
        conn.execute(
            sa.text("UPDATE ml.woe_anchor_model_registry_v1 SET code_sha256 = :s WHERE model_key = :k"),
            {"s": "f" * 64, "k": second},
        )
    at = _page("certification")
    assert any(s.value.startswith("Fresh: #1 by test-certifier") for s in at.success)
    assert any("1 model(s) were trained by different code" in w.value for w in at.warning)
    at.button[0].click().run()
    assert any("certified #2" in s.value for s in at.success)


def test_promote_changes_the_active_model_and_the_history(two_models):
    engine, first, second = two_models
    at = _page("promote", {"model": second})
    checks = at.dataframe[0].value
    assert set(checks["check"]) >= {"model_exists", "artifacts_complete", "certification_fresh", "not_active"}
    promote_button = next(b for b in at.button if b.label == "Promote…")
    promote_button.click().run()
    at.text_area(key="promote_reason").input("better EVAL AUC").run()
    next(b for b in at.button if b.key == "confirm_promote").click().run()
    assert not at.exception, at.exception
    assert registry.active_model_key(engine) == second
    history = promote.history(engine)
    assert list(history["to_model_key"][:2]) == [second, first]
    assert history.iloc[0]["actor"] == "reviewer-1" and history.iloc[0]["reason"] == "better EVAL AUC"


def test_promote_without_a_reason_changes_nothing(two_models):
    engine, first, second = two_models
    at = _page("promote", {"model": second})
    next(b for b in at.button if b.label == "Promote…").click().run()
    next(b for b in at.button if b.key == "confirm_promote").click().run()
    assert any("reason must be a non-empty explanation" in e.value for e in at.error)
    assert registry.active_model_key(engine) == first


def test_lookup_contributions_add_up_to_the_shown_logit(two_models):
    engine, first, second = two_models
    with engine.connect() as conn:
        listing = conn.execute(
            sa.text(
                "SELECT listing_id FROM ml.socio_market_snapshots GROUP BY 1 HAVING count(*) > 1 ORDER BY 1 LIMIT 1"
            )
        ).scalar_one()
    at = _page("lookup", {"listing": str(listing), "model": second})
    live = score.lookup(engine, int(listing))
    candidate = score.lookup(engine, int(listing), model_key=second)
    assert len(at.dataframe[0].value) == len(live) > 1  # every snapshot listed
    for i in range(len(live)):
        explain = next(s for s in at.selectbox if s.label == "Explain the snapshot at t0")
        explain.set_value(explain.options[i]).run()
        logits = [m.value for m in at.metric if m.label == "woe_logit"]
        assert logits == [f"{live.iloc[i]['woe_logit']:+.4f}", f"{candidate.iloc[i]['woe_logit']:+.4f}"]
        parts = at.dataframe[1].value
        assert parts["logit_after"].iloc[-1] == pytest.approx(live.iloc[i]["woe_logit"])
        assert live.iloc[i]["base_logit"] + parts["woe"].sum() == pytest.approx(live.iloc[i]["woe_logit"])


def test_stale_certification_makes_lookup_refuse_without_numbers(two_models):
    engine, first, second = two_models
    with engine.begin() as conn:
        change_first_listing(conn)
        listing = conn.execute(sa.text("SELECT min(listing_id) FROM ml.socio_market_snapshots")).scalar_one()
    at = _page("lookup", {"listing": str(listing)})
    # the database's reason: on Citus the change is seen in the workers' counts (docs/citus.md)
    assert any("refused to score" in e.value and re.search(DATA_CHANGED, e.value) for e in at.error)
    assert any("How to fix" in i.value for i in at.info)
    assert len(at.metric) == 0


@pytest.mark.parametrize("raw", ["-5", "99999999999999999999", "abc"])
def test_lookup_link_with_a_bad_listing_id_is_a_warning(two_models, raw):
    at = _page("lookup", {"listing": raw})
    assert any(
        f"listing {markdown_text(repr(raw))} in the link is not a valid listing id" in w.value for w in at.warning
    )


def _listing_ids(engine, n: int) -> list[int]:
    with engine.connect() as conn:
        return [
            int(x)
            for x in conn.execute(
                sa.text("SELECT DISTINCT listing_id FROM ml.socio_market_snapshots ORDER BY 1 LIMIT :n"), {"n": n}
            ).scalars()
        ]


def test_lookup_keeps_every_entered_id_and_the_link_follows(two_models):
    engine, first, second = two_models
    at = _page("lookup")
    for listing in _listing_ids(engine, 6):
        at.number_input(key="lookup_listing").set_value(listing).run()
        assert not at.exception, at.exception
        assert at.number_input(key="lookup_listing").value == listing
        assert at.query_params["listing"] == str(listing)
        assert at.subheader[0].value == f"Snapshots of listing {listing}"
    at.selectbox(key="lookup_model").set_value(second).run()
    assert at.query_params["model"] == second
    assert len([m for m in at.metric if m.label == "woe_logit"]) == 2


def test_lookup_offers_existing_listings(two_models):
    engine, first, second = two_models
    at = _page("lookup")
    assert any("pick one of the newest" in i.value for i in at.info)
    newest = at.selectbox(key="lookup_pick").options
    assert len(newest) == 10
    at.selectbox(key="lookup_pick").set_value(int(newest[0])).run()
    assert at.number_input(key="lookup_listing").value == int(newest[0])
    assert not at.warning and len(at.metric) == 2
    next(b for b in at.button if b.label == "Random listing").click().run()
    drawn = at.number_input(key="lookup_listing").value
    assert drawn in _listing_ids(engine, 10_000) and not at.warning


def test_train_refuses_a_cutoff_outside_the_data_and_names_it(two_models):
    at = _page("train")
    import datetime as dt

    at.date_input[0].set_value(dt.date(2030, 1, 1))
    at.button[0].click().run()
    assert not at.exception
    assert any("train_cutoff_ts must be" in e.value and "2030-01-01" in e.value for e in at.error)
    assert "train_job" not in at.session_state
    assert any("Nothing was trained: cutoff 2030-01-01" in c.value for c in at.caption)


def test_train_result_names_the_parameters_it_used(two_models):
    at = _page("train")
    next(n for n in at.number_input if n.label.startswith("Folds")).set_value(3)
    at.button[0].click().run()
    job = jobs.RUNNER.wait(at.session_state["train_job"], timeout=120)
    assert job.status == "done", job.error
    at.run()
    used = [c.value for c in at.caption if c.value.startswith("Trained with cutoff ")]
    assert used and "3 folds" in used[0] and "half-life 90 days" in used[0] and "dsold thresholds" in used[0]


def test_compare_evaluates_on_common_rows_and_keeps_consecutive_choices(two_models):
    engine, first, second = two_models
    at = _page("compare", {"models": f"{first},{second}"})
    common = at.dataframe[0].value
    assert list(common["model_key"]) == [first, second] and common["n"].nunique() == 1 and common["n"][0] > 0
    assert any("the same for every model" in c.value for c in at.caption)
    for chosen in ([second], [second, first], [first], [first, second], [second]):
        at.multiselect(key="compare_models").set_value(chosen).run()
        assert not at.exception, at.exception
        assert at.multiselect(key="compare_models").value == chosen
        assert at.query_params["models"] == ",".join(chosen)


def test_promote_advisory_failure_needs_acknowledging_then_everything_updates(two_models):
    from woe_core import reviewer

    engine, first, second = two_models  # first is active
    if reviewer.metrics_vs_active(engine, second, first).passed:  # make the stronger one active
        promote.promote(engine, second, "carol", "the stronger model")
        weak = first
    else:
        weak = second
    at = _page("promote", {"model": weak})
    checks = at.dataframe[0].value
    row = checks[checks["check"] == "metrics_vs_active"].iloc[0]
    assert row["kind"] == "advisory" and row["result"] == "FAIL"
    assert set(checks.loc[checks["check"] != "metrics_vs_active", "kind"]) == {"blocking"}
    assert any("Advisory check(s) failed: metrics_vs_active" in w.value for w in at.warning)
    next(b for b in at.button if b.label == "Promote…").click().run()
    confirm = next(b for b in at.button if b.key == "confirm_promote")
    assert confirm.disabled
    at.checkbox(key="ack_metrics_vs_active").check().run()
    at.text_area(key="promote_reason").input("weaker but needed").run()
    assert not next(b for b in at.button if b.key == "confirm_promote").disabled
    next(b for b in at.button if b.key == "confirm_promote").click().run()
    assert not at.exception, at.exception
    assert registry.active_model_key(engine) == weak
    assert (
        at.success[0].value.startswith(f"`{weak}` is now the active model")
        and "metrics_vs_active" in at.success[0].value
    )
    assert not any("No candidate" in i.value for i in at.info)
    assert at.selectbox(key="promote_model").value is None
    assert at.dataframe[-1].value.iloc[0]["to_model_key"] == weak


def test_certify_now_updates_the_banner_at_once(two_models):
    at = _page("certification")
    next(b for b in at.button if b.label == "Certify now").click().run()
    assert not at.exception
    assert "certified #2" in at.success[0].value  # the result first
    assert any(s.value.startswith("Fresh: #2 by reviewer-1") for s in at.success)


def test_train_offers_compare_with_active_only_when_a_model_is_active(monkeypatch, certified_engine):
    monkeypatch.setenv("WOE_DATABASE_URL", certified_engine.url.render_as_string(hide_password=False))
    monkeypatch.setenv("WOE_ACTOR", "reviewer-1")
    at = _page("train")
    next(n for n in at.number_input if n.label.startswith("Folds")).set_value(2)
    at.button[0].click().run()
    job = jobs.RUNNER.wait(at.session_state["train_job"], timeout=120)
    assert job.status == "done", job.error
    at.run()
    links = [(p.label, p.page) for p in at.get("page_link")]
    assert not any(label == "Compare with the active model" for label, _ in links), links
    assert any(label.startswith("Inspect this candidate") for label, _ in links), links
    assert any(label == "Promote this candidate" for label, _ in links), links


def test_delete_candidate_redraws_the_page(two_models):
    engine, first, second = two_models
    at = _page("promote", {"model": second})
    next(b for b in at.button if b.label == "Delete candidate…").click().run()
    next(b for b in at.button if b.key == "confirm_delete").click().run()
    assert not at.exception, at.exception
    assert second not in set(registry.list_models(engine)["model_key"])
    assert at.success[0].value == f"Deleted candidate `{second}` and all its artifacts."
    assert any("No candidate to promote" in i.value for i in at.info)


def test_deleting_a_once_promoted_model_is_refused_with_the_reason(two_models):
    engine, first, second = two_models
    promote.promote(engine, second, "carol", "second")  # first is now a candidate that was promoted once
    at = _page("promote", {"model": first})
    next(b for b in at.button if b.label == "Delete candidate…").click().run()
    next(b for b in at.button if b.key == "confirm_delete").click().run()
    assert not at.exception, at.exception
    assert any(repr(first) in e.value for e in at.error)
    assert first in set(registry.list_models(engine)["model_key"])


def test_on_large_data_the_common_window_is_scored_only_on_request(two_models, monkeypatch):
    """Above compare.SCORE_ON_VISIT_BELOW snapshots a visit does no row-level scoring: Compare offers a
    button, Promote's advisory check fails as not run (so a promotion must acknowledge it) until asked."""
    from woe_core import compare, reviewer

    engine, first, second = two_models  # first is active
    monkeypatch.setattr(compare, "SCORE_ON_VISIT_BELOW", 0)
    at = _page("compare", {"models": f"{first},{second}"})
    assert not any("the same for every model" in c.value for c in at.caption)
    assert any("only on request" in i.value for i in at.info)
    at.button(key="compare_score_window").click().run()
    assert not at.exception, at.exception
    assert any("the same for every model" in c.value for c in at.caption)
    common = at.dataframe[0].value
    assert list(common["model_key"]) == [first, second] and common["n"][0] > 0

    at = _page("promote", {"model": second})
    checks = at.dataframe[0].value
    row = checks[checks["check"] == "metrics_vs_active"].iloc[0]
    assert (row["kind"], row["result"], row["detail"]) == ("advisory", "FAIL", reviewer.NOT_COMPARED)
    at.button(key="promote_score_window").click().run()
    assert not at.exception, at.exception
    detail = at.dataframe[0].value.set_index("check").loc["metrics_vs_active", "detail"]
    assert detail.startswith("AUC ") and "common rows" in detail
