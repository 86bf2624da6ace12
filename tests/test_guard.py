"""The guarded live view fails closed: no, failed, stale or outdated certification -> error."""

import re
from datetime import timedelta

import pytest
import sqlalchemy as sa
from conftest import CITUS_TARGET, DATA_CHANGED, change_first_listing, leak_asof
from sqlalchemy.exc import DBAPIError

from modelkit import backdated_certification, handwritten_map, insert_model
from woe_core import certify, score
from woe_core.errors import CertificationRequired

GUARDED = "SELECT count(*) FROM ml.woe_anchor_scores_live_train_v"
DATASET = certify.ENTRYPOINT


@pytest.fixture
def with_model(demo_engine):
    with demo_engine.begin() as conn:
        insert_model(conn, "tom_aft_v1_20260601_000000", handwritten_map(), active=True)
    return demo_engine


def _guarded_count(engine):
    with engine.connect() as conn:
        return conn.execute(sa.text(GUARDED)).scalar_one()


def _refusal(engine) -> str:
    with pytest.raises(DBAPIError) as info:
        _guarded_count(engine)
    assert info.value.orig.sqlstate == "WC001"
    message = info.value.orig.diag.message_primary
    assert DATASET in message
    return message


def test_no_certification_is_refused(with_model):
    assert "no certification has been recorded" in _refusal(with_model)


def test_failed_certification_is_refused_naming_the_failed_check(with_model):
    with with_model.begin() as conn:
        leak_asof(conn, "listing_id = (SELECT min(listing_id) FROM ml.socio_market_snapshots)", timedelta(minutes=1))
    assert not certify.certify(with_model, "t").passed
    message = _refusal(with_model)
    assert "failed checks: t0_safe" in message


def test_stale_certification_is_refused(with_model):
    with with_model.begin() as conn:
        backdated_certification(conn, DATASET, "25 hours")
    assert "is older than 24:00:00" in _refusal(with_model)
    certify.certify(with_model, "t")
    assert _guarded_count(with_model) > 0


def test_data_changed_after_certification_is_refused(with_model):
    certify.certify(with_model, "t")
    assert _guarded_count(with_model) > 0
    with with_model.begin() as conn:
        change_first_listing(conn)
    assert re.search(DATA_CHANGED, _refusal(with_model))
    certify.certify(with_model, "t")
    assert _guarded_count(with_model) > 0


def test_fresh_certification_serves_every_row(with_model):
    certify.certify(with_model, "t")
    with with_model.connect() as conn:
        snapshots = conn.execute(sa.text(f"SELECT count(*) FROM {DATASET}")).scalar_one()
    assert _guarded_count(with_model) == snapshots > 0


def test_guard_refuses_even_when_no_row_would_match(with_model):
    with pytest.raises(DBAPIError, match="is not certified"), with_model.connect() as conn:
        conn.execute(sa.text("SELECT * FROM ml.woe_anchor_scores_live_train_v WHERE listing_id = -1")).all()


def _guard_runs_once_before_any_row(plan: str) -> bool:
    """The guard is an init plan (one call per query) whose result is the plan's one-time filter."""
    lines = plan.splitlines()
    init = next(i for i, line in enumerate(lines) if line.strip() == "InitPlan 1")
    return (
        "Function Scan on require_certified_strict" in lines[init + 1]
        and plan.count("require_certified_strict") == 1
        and "One-Time Filter: (InitPlan 1).col1" in plan
    )


@pytest.mark.skipif(CITUS_TARGET, reason="a single-node plan; test_citus.py checks the distributed plan")
def test_guard_is_a_one_time_filter_not_a_per_row_call(with_model):
    certify.certify(with_model, "t")
    with with_model.connect() as conn:
        plan = "\n".join(conn.execute(sa.text("EXPLAIN " + GUARDED)).scalars())
        assert _guard_runs_once_before_any_row(plan), plan
        plan = "\n".join(
            conn.execute(
                sa.text("EXPLAIN SELECT * FROM ml.woe_anchor_scores_live_train_v WHERE listing_id = 1")
            ).scalars()
        )
        assert _guard_runs_once_before_any_row(plan), plan


def test_lookup_translates_the_refusal(with_model):
    with pytest.raises(CertificationRequired, match=f"{DATASET} is not certified.*python -m woe_core certify"):
        score.lookup(with_model, 1)


@pytest.mark.parametrize(("dataset", "max_age"), [(None, "24 hours"), (DATASET, "0 seconds"), (DATASET, "-1 hour")])
def test_guard_rejects_meaningless_arguments(engine, dataset, max_age):
    with pytest.raises(DBAPIError, match="max_age must be a positive interval"), engine.connect() as conn:
        conn.execute(
            sa.text("SELECT audit.require_certified_strict(:d, CAST(:a AS interval))"), {"d": dataset, "a": max_age}
        )


def test_guard_refuses_in_a_parallel_worker_too(with_model):
    """The guard is PARALLEL SAFE: a worker checks it before returning a row, and its refusal reaches the client."""
    with with_model.connect() as conn:
        conn.execute(sa.text("SET debug_parallel_query = on"))
        conn.execute(sa.text("SET parallel_leader_participation = off"))
        with pytest.raises(DBAPIError) as info:
            conn.execute(sa.text(GUARDED)).scalar_one()
    assert info.value.orig.sqlstate == "WC001"
    assert "no certification has been recorded" in info.value.orig.diag.message_primary
