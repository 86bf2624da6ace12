"""Live scoring of a hand-written model equals base_logit + Σ woe, computed here independently."""

import pandas as pd
import pytest
import sqlalchemy as sa
from conftest import CITUS_TARGET

from modelkit import BAND_COLUMNS, break_glass, handwritten_map, insert_model, reference_bands, sigmoid
from woe_core import score
from woe_core.errors import InvalidParameter, NotFound

KEY = "tom_aft_v1_20260601_000000"
SKIPPED = {("trust", "HIGH"), ("present", "present_missing")}
CUTS = (0.45, 0.6)
T = (-0.15, -0.05, 0.05, 0.15)


@pytest.fixture
def live(certified_engine):
    woe = handwritten_map(skip=SKIPPED)
    with certified_engine.begin() as conn:
        insert_model(conn, KEY, woe, active=True, base_logit=-0.4, cuts=CUTS)
    return certified_engine, woe


def test_every_row_scores_base_plus_sum_of_mapped_woe(live):
    engine, woe = live
    with engine.connect() as conn:
        raw = pd.read_sql_query(sa.text("SELECT * FROM ml.woe_anchor_feature_store_t0_v1_v"), conn)
        scored = pd.read_sql_query(sa.text("SELECT * FROM ml.woe_anchor_scores_live_train_v"), conn)
    raw = raw.astype(object).where(raw.notna(), None)
    assert len(scored) == len(raw) > 0
    scored = scored.set_index(["listing_id", "t0"])
    seen_unmapped = 0
    for row in raw.to_dict("records"):
        bands = reference_bands(row, T, CUTS)
        expected_logit = -0.4 + sum(woe.get((b, v), 0.0) for b, v in bands.items())
        expected_unmapped = sorted(b for b, v in bands.items() if (b, v) not in woe)
        got = scored.loc[(row["listing_id"], row["t0"])]
        assert {b: got[c] for b, c in BAND_COLUMNS.items()} == bands
        assert got["woe_logit"] == pytest.approx(expected_logit, abs=1e-12)
        assert got["woe_anchor_p_slow21"] == pytest.approx(sigmoid(expected_logit), abs=1e-12)
        assert sorted(got["unmapped_bands"]) == expected_unmapped
        seen_unmapped += bool(expected_unmapped)
    assert seen_unmapped > 0, "the demo should contain values the hand-written map lacks"


def test_bands_live_view_and_live_scores_follow_the_active_model(live):
    engine, woe = live
    other = "tom_aft_v1_20260602_000000"
    with engine.begin() as conn:
        insert_model(conn, other, {k: -v for k, v in woe.items()}, base_logit=0.3, cuts=CUTS)
        live_keys = (
            conn.execute(sa.text("SELECT DISTINCT model_key FROM ml.v_woe_anchor_bands_live_v1")).scalars().all()
        )
        assert live_keys == [KEY]
        break_glass(conn, "test: switch the active model by hand")
        conn.execute(sa.text("UPDATE ml.woe_anchor_model_registry_v1 SET is_active = false"))
        conn.execute(
            sa.text("UPDATE ml.woe_anchor_model_registry_v1 SET is_active = true WHERE model_key = :k"), {"k": other}
        )
        live_keys = conn.execute(sa.text("SELECT DISTINCT model_key FROM ml.woe_anchor_scores_live_v1")).scalars().all()
        assert live_keys == [other]


def test_lookup_returns_each_snapshot_with_contributions_that_add_up(live):
    engine, woe = live
    with engine.connect() as conn:
        listing_id, n = conn.execute(
            sa.text(
                "SELECT listing_id, count(*) FROM ml.socio_market_snapshots GROUP BY 1 HAVING count(*) > 1 "
                "ORDER BY 1 LIMIT 1"
            )
        ).one()
    frame = score.lookup(engine, int(listing_id))
    assert len(frame) == n and (frame["model_key"] == KEY).all()
    for _, row in frame.iterrows():
        parts = score.contributions(row)
        assert parts["logit_after"].iloc[-1] == pytest.approx(row["woe_logit"])
        assert row["base_logit"] + parts["woe"].sum() == pytest.approx(row["woe_logit"])
        assert set(parts.loc[parts["unmapped"], "band_name"]) == set(row["unmapped_bands"])
        assert (parts.loc[parts["unmapped"], "woe"] == 0).all()


def test_lookup_under_a_candidate_model(live):
    engine, woe = live
    other = "tom_aft_v1_20260603_000000"
    with engine.begin() as conn:
        insert_model(conn, other, {k: 2 * v for k, v in woe.items()}, base_logit=0.1, cuts=CUTS)
        listing_id = conn.execute(sa.text("SELECT min(listing_id) FROM ml.socio_market_snapshots")).scalar_one()
    active = score.lookup(engine, int(listing_id))
    candidate = score.lookup(engine, int(listing_id), model_key=other)
    assert (candidate["model_key"] == other).all() and len(candidate) == len(active)
    for (_, a), (_, c) in zip(active.iterrows(), candidate.iterrows(), strict=True):
        assert c["woe_logit"] - 0.1 == pytest.approx(2 * (a["woe_logit"] + 0.4))


@pytest.mark.parametrize(
    ("listing_id", "error", "message"),
    [
        (0, InvalidParameter, "listing_id must be a positive integer, got 0"),
        (-5, InvalidParameter, "got -5"),
        ("12", InvalidParameter, "got '12'"),
        (True, InvalidParameter, "got True"),
    ],
)
def test_lookup_rejects_bad_listing_ids(live, listing_id, error, message):
    with pytest.raises(error, match=message):
        score.lookup(live[0], listing_id)


def test_lookup_of_unknown_listing_is_empty_and_unknown_model_is_named(live):
    engine, _ = live
    assert score.lookup(engine, 999_999_999_999).empty
    with pytest.raises(NotFound, match="model 'tom_aft_v1_20990101_000000' does not exist"):
        score.lookup(engine, 1, model_key="tom_aft_v1_20990101_000000")


def test_lookup_without_active_model_says_so(certified_engine):
    with pytest.raises(NotFound, match="no model is active"):
        score.lookup(certified_engine, 1)


@pytest.mark.parametrize(("woe", "p_bounds"), [(900.0, (1.0, 1.0)), (-900.0, (0.0, 1e-300))])
def test_extreme_logits_do_not_overflow(certified_engine, woe, p_bounds):
    with certified_engine.connect() as conn, conn.begin() as transaction:
        insert_model(
            conn,
            KEY,
            {("trust", v): woe for v in ["HIGH", "MEDIUM", "LOW", "NEW", "trust_missing"]},
            active=True,
            base_logit=0.0,
        )
        logit_min, logit_max, p_min, p_max = conn.execute(
            sa.text(
                "SELECT min(woe_logit), max(woe_logit), min(woe_anchor_p_slow21), max(woe_anchor_p_slow21) "
                "FROM ml.woe_anchor_scores_live_train_v"
            )
        ).one()
        transaction.rollback()
    assert logit_min == logit_max == woe  # the logit itself is reported unclamped
    assert p_bounds[0] <= p_min <= p_max <= p_bounds[1]
    assert (p_min == 1.0) if woe > 0 else (p_max > 0.0)  # the sigmoid saturates without exp() overflowing


def _in_one_worker(conn) -> None:
    """Run the whole plan in a parallel worker when it is parallel-safe (the leader only gathers)."""
    conn.execute(sa.text("SET debug_parallel_query = on"))
    conn.execute(sa.text("SET parallel_leader_participation = off"))


@pytest.mark.skipif(CITUS_TARGET, reason="a single-node plan; test_citus.py checks the distributed plan")
def test_full_scoring_through_the_guard_is_parallel_safe(live):
    """Nothing in the guarded view (guard, packed map, banding) keeps its rows from being scored by workers."""
    engine, _ = live
    with engine.connect() as conn:
        _in_one_worker(conn)
        plan = "\n".join(
            conn.execute(
                sa.text("EXPLAIN SELECT count(*), avg(woe_anchor_p_slow21) FROM ml.woe_anchor_scores_live_train_v")
            ).scalars()
        )
    assert plan.startswith("Gather") and "Single Copy: true" in plan, plan
    assert "One-Time Filter: (InitPlan 1).col1" in plan and "Function Scan on require_certified_strict" in plan, plan


def test_parallel_workers_score_bit_identically(live):
    engine, _ = live
    query = sa.text(
        "SELECT listing_id, t0, woe_logit, woe_anchor_p_slow21, unmapped_bands "
        "FROM ml.woe_anchor_scores_live_train_v ORDER BY listing_id, t0"
    )
    with engine.connect() as conn:
        conn.execute(sa.text("SET max_parallel_workers_per_gather = 0"))
        serial = conn.execute(query).all()
        conn.execute(sa.text("RESET max_parallel_workers_per_gather"))
        _in_one_worker(conn)
        parallel = conn.execute(query).all()
    assert len(serial) > 0 and parallel == serial
