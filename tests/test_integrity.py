"""Governance integrity against hostile insiders, with real logins.

Each test logs in as a member of one project role (woe_certifier, woe_trainer,
woe_promoter), as a login with no grants, or as the owner, tries one way of
breaking the promise "live scores come only from a reviewed, promoted model, on
data that passed certification and has not changed since", and asserts both the
refusal (SQLSTATE and message) and that nothing changed: the active model, every
model's artifact digest, the live scores and the certification history.
"""

from __future__ import annotations

import re
import threading
import time
from datetime import timedelta

import pytest
import sqlalchemy as sa
from conftest import CITUS_TARGET, DATA_CHANGED, leak_asof
from sqlalchemy.exc import DBAPIError

from modelkit import break_glass, derived_model
from woe_core import certify, promote, registry
from woe_core.errors import CertificationRequired, PromotionRefused

DATASET = certify.ENTRYPOINT
KEY_A = "tom_aft_v1_20260601_000001"
KEY_B = "tom_aft_v1_20260601_000002"
DENIED = "42501"


@pytest.fixture
def governed(certified_engine):
    """A certified demo; KEY_A (reproducible) promoted and active, KEY_B a reproducible candidate."""
    with certified_engine.begin() as conn:
        derived_model(conn, KEY_A, half_life=60.0, created_by="alice")
        derived_model(conn, KEY_B, half_life=90.0, created_by="bob")
    promote.promote(certified_engine, KEY_A, "owner", "initial model")
    return certified_engine


def state(engine) -> dict:
    """What must not change when an attack is refused."""
    with engine.connect() as conn:
        return {
            "active": conn.execute(
                sa.text("SELECT model_key FROM ml.woe_anchor_model_registry_v1 WHERE is_active")
            ).scalar_one_or_none(),
            "digests": dict(
                conn.execute(
                    sa.text(
                        "SELECT model_key, ml.woe_anchor_artifact_digest_v1(model_key) FROM ml.woe_anchor_model_registry_v1"
                    )
                ).all()
            ),
            "live": tuple(
                conn.execute(
                    sa.text(
                        "SELECT count(*), round(sum(woe_anchor_p_slow21)::numeric, 9) FROM ml.woe_anchor_scores_live_v1"
                    )
                ).one()
            ),
            "certifications": conn.execute(
                sa.text(
                    "SELECT certification_id, certified_at, passed, dataset_sha256 FROM audit.dataset_certifications "
                    "ORDER BY certification_id"
                )
            ).all(),
            "promotions": conn.execute(sa.text("SELECT count(*) FROM ml.woe_anchor_promotions_v1")).scalar_one(),
        }


def refused(
    engine, statement: str, params: dict | None = None, *, sqlstate: str = DENIED, match: str | None = None
) -> str:
    with pytest.raises(DBAPIError, match=match) as info, engine.begin() as conn:
        conn.execute(sa.text(statement), params or {})
    assert info.value.orig.sqlstate == sqlstate, info.value
    return info.value.orig.diag.message_primary


def guard_refusal(engine) -> str:
    with pytest.raises(DBAPIError) as info, engine.connect() as conn:
        conn.execute(sa.text("SELECT count(*) FROM ml.woe_anchor_scores_live_train_v")).scalar()
    assert info.value.orig.sqlstate == "WC001", info.value
    return info.value.orig.diag.message_primary


def copy_model(conn, source: str, key: str, *, c1: str = "c1", woe: str = "woe") -> None:
    """Register ``key`` by hand as a copy of ``source`` (declared as alice, back-dated), with the SQL
    expressions ``c1`` and ``woe`` in place of its final c1 and WOE."""
    conn.execute(
        sa.text(
            "INSERT INTO ml.woe_anchor_model_registry_v1 (model_key, train_cutoff_ts, half_life_days, eps, n_folds, "
            "band_schema_version, code_sha256, is_active, base_rate, base_logit, dsold_t1, dsold_t2, dsold_t3, "
            "dsold_t4, created_by, created_at) SELECT :k, train_cutoff_ts, half_life_days, eps, n_folds, "
            "band_schema_version, code_sha256, false, base_rate, base_logit, dsold_t1, dsold_t2, dsold_t3, dsold_t4, "
            "'alice', '2020-01-01' FROM ml.woe_anchor_model_registry_v1 WHERE model_key = :s"
        ),
        {"k": key, "s": source},
    )
    conn.execute(
        sa.text(
            f"INSERT INTO ml.woe_anchor_cuts_v1 SELECT :k, fold_id, {c1}, c2, n_rows "
            "FROM ml.woe_anchor_cuts_v1 WHERE model_key = :s"
        ),
        {"k": key, "s": source},
    )
    conn.execute(
        sa.text(
            f"INSERT INTO ml.woe_anchor_map_v1 SELECT :k, fold_id, band_name, band_value, {woe}, "
            "w_pos, w_neg, n_pos, n_neg FROM ml.woe_anchor_map_v1 WHERE model_key = :s"
        ),
        {"k": key, "s": source},
    )


def guarded_rows(engine) -> int:
    with engine.connect() as conn:
        return conn.execute(sa.text("SELECT count(*) FROM ml.woe_anchor_scores_live_train_v")).scalar_one()


# What Citus refuses on its distributed tables before any row or definition changes; on one
# node these statements run, and the guard or certification has to catch what they did.
CITUS_REFUSES = {
    "trigger": "triggers are not supported on distributed tables",
    "inherit": "non-distributed tables cannot inherit distributed tables",
    "operator": 'has dependency on unsupported object "operator ml.##',
}


def citus_refuses(engine, statements: list[str], what: str) -> None:
    """On Citus: the statements fail with Citus' refusal and the certified data are still served."""
    with pytest.raises(DBAPIError, match=re.escape(CITUS_REFUSES[what])), engine.begin() as conn:
        for statement in statements:
            conn.execute(sa.text(statement))
    assert guarded_rows(engine) > 0


def test_no_security_definer_function_is_executable_by_public(engine):
    with engine.connect() as conn:
        exposed = (
            conn.execute(
                sa.text(
                    "SELECT p.oid::regprocedure::text FROM pg_proc AS p JOIN pg_namespace AS n ON n.oid = p.pronamespace "
                    "WHERE n.nspname IN ('ml', 'audit') AND p.prosecdef "
                    "AND has_function_privilege('public', p.oid, 'EXECUTE')"
                )
            )
            .scalars()
            .all()
        )
    assert exposed == []


# 1. Forged certification -------------------------------------------------------------------------------------


def test_a_certifier_cannot_forge_a_certification(governed, login):
    certifier = login("woe_certifier")
    with governed.begin() as conn:  # bad data: the next real certification fails
        leak_asof(conn, "listing_id = (SELECT min(listing_id) FROM ml.socio_market_snapshots)", timedelta(hours=1))
    failed = certify.certify(certifier, "cert-bot")
    assert not failed.passed and [c.name for c in failed.failed_checks] == ["t0_safe"]
    before = state(governed)
    for forged in [
        "INSERT INTO audit.dataset_certifications (dataset, certified_at, certified_by, db_user, passed, "
        "checks) VALUES (:d, '9999-01-01', 'cert-bot', 'someone', true, '[]')",
        "INSERT INTO audit.dataset_certifications (dataset, certified_by, passed, checks) "
        "VALUES (:d, 'cert-bot', true, '[]')",
    ]:
        refused(certifier, forged, {"d": DATASET}, match="permission denied for table dataset_certifications")
    refused(certifier, "UPDATE audit.dataset_certifications SET passed = true", match="permission denied")
    assert state(governed) == before
    assert "failed checks: t0_safe" in guard_refusal(governed)


def test_even_the_owner_writes_a_certification_only_through_the_function_or_a_recorded_break_glass(governed):
    forged = (
        "INSERT INTO audit.dataset_certifications (dataset, certified_at, certified_by, db_user, passed, checks) "
        "VALUES (:d, '9999-01-01', 'owner', 'someone-else', true, '[]')"
    )
    refused(
        governed,
        forged,
        {"d": DATASET},
        match=r"audit.dataset_certifications is written only by audit.certify_dataset\(text,text\)",
    )
    with governed.begin() as conn:
        break_glass(conn, "repair: re-record a certification")
        conn.execute(sa.text(forged), {"d": DATASET})
        row = conn.execute(
            sa.text(
                "SELECT certified_at > now() - interval '1 minute' AND certified_at <= clock_timestamp(), "
                "db_user = session_user FROM audit.dataset_certifications ORDER BY certification_id DESC LIMIT 1"
            )
        ).one()
    assert tuple(row) == (True, True)  # time and login are still the database's
    certification = certify.certify(governed, "t")
    assert certification.passed and certification.dataset_sha256


# 2. Changes the guard never hears of --------------------------------------------------------------------------

_FIRST = "(SELECT listing_id, t0 FROM ml.socio_market_snapshots ORDER BY listing_id, t0 LIMIT 1)"
SILENT_CHANGES = {
    "replication_role_replica": [
        "SET LOCAL session_replication_role = replica",
        f"UPDATE ml.socio_market_snapshots SET ships = NOT ships WHERE (listing_id, t0) = {_FIRST}",
    ],
    "disabled_triggers": [
        "ALTER TABLE ml.socio_market_snapshots DISABLE TRIGGER ALL",
        f"UPDATE ml.socio_market_snapshots SET ships = NOT ships WHERE (listing_id, t0) = {_FIRST}",
        "ALTER TABLE ml.socio_market_snapshots ENABLE ALWAYS TRIGGER woe_dataset_changed",
        "ALTER TABLE ml.socio_market_snapshots ENABLE ALWAYS TRIGGER woe_dataset_replicated",
    ],
    "dropped_trigger": [
        "DROP TRIGGER woe_dataset_changed ON ml.iphone_image_features",
        "UPDATE ml.iphone_image_features SET n_photos = 1",
    ],
    "replaced_view": [
        "CREATE OR REPLACE VIEW ml.socio_market_feature_store_train_v AS "
        "SELECT listing_id, generation, t0, delta_vs_sold_median_30d, seller_trust_tier, ships, negotiable, "
        "item_condition, dmg_ai_prob, battery_health_pct, NULL::timestamptz AS sold_at, feature_asof_ts "
        "FROM ml.socio_market_snapshots"
    ],
    "child_table": [
        "CREATE TABLE ml.more_snapshots () INHERITS (ml.socio_market_snapshots)",
        "INSERT INTO ml.more_snapshots SELECT listing_id + 1, generation, t0, delta_vs_sold_median_30d, "
        "seller_trust_tier, ships, negotiable, item_condition, dmg_ai_prob, battery_health_pct, sold_at, "
        f"feature_asof_ts FROM ml.socio_market_snapshots WHERE (listing_id, t0) = {_FIRST}",
    ],
    "truncate": ["TRUNCATE ml.iphone_image_features"],
    "copy": [
        "COPY ml.iphone_image_features (listing_id, t0, n_photos) FROM PROGRAM 'echo 1,2026-01-01,3' WITH (FORMAT csv)"
    ],
}


@pytest.mark.parametrize("change", list(SILENT_CHANGES), ids=list(SILENT_CHANGES))
def test_every_change_to_certified_data_or_its_definition_invalidates_it(governed, change):
    assert guarded_rows(governed) > 0
    refused_by_citus = {"disabled_triggers": "trigger", "dropped_trigger": "trigger", "child_table": "inherit"}
    if CITUS_TARGET and change in refused_by_citus:
        citus_refuses(governed, SILENT_CHANGES[change], refused_by_citus[change])
        return
    with governed.begin() as conn:
        for statement in SILENT_CHANGES[change]:
            conn.execute(sa.text(statement))
    assert re.search(f"is not certified: ({DATA_CHANGED})", guard_refusal(governed))
    with pytest.raises(CertificationRequired, match=DATA_CHANGED):
        promote.promote(governed, KEY_B, "owner", "after a silent change")
    cert = certify.certify(governed, "t")
    if change in ("dropped_trigger", "child_table"):
        # Sources without a change trigger cannot be certified until they are tracked again.
        assert [c.name for c in cert.failed_checks] == ["change_tracking"]
        assert "has no change trigger firing always" in cert.failed_checks[0].description
        with governed.begin() as conn:
            conn.execute(sa.text("SELECT audit.track_dataset_sources(:d)"), {"d": DATASET})
        cert = certify.certify(governed, "t")
    assert cert.passed, cert.summary()
    assert guarded_rows(governed) > 0


def test_rows_applied_as_by_logical_replication_are_recorded_by_the_row_trigger(governed):
    """The apply worker of logical replication fires row triggers only, with session_replication_role = replica."""
    if CITUS_TARGET:  # a store's triggers cannot be disabled or dropped there at all
        citus_refuses(
            governed, ["ALTER TABLE ml.socio_market_snapshots DISABLE TRIGGER woe_dataset_changed"], "trigger"
        )
        citus_refuses(governed, ["DROP TRIGGER woe_dataset_replicated ON ml.socio_market_snapshots"], "trigger")
        return
    with governed.connect() as conn:  # rolled back at the end
        before = conn.execute(sa.text("SELECT changed_at FROM audit.dataset_changes")).scalar_one()
        conn.execute(sa.text("SET LOCAL session_replication_role = replica"))
        conn.execute(sa.text("ALTER TABLE ml.socio_market_snapshots DISABLE TRIGGER woe_dataset_changed"))
        stamp = conn.execute(sa.text("SELECT changed_at FROM audit.dataset_changes")).scalar_one()
        assert stamp > before  # the DDL itself is a recorded change; now only the row trigger is left
        conn.execute(
            sa.text(f"UPDATE ml.socio_market_snapshots SET ships = NOT ships WHERE (listing_id, t0) = {_FIRST}")
        )
        assert conn.execute(sa.text("SELECT changed_at FROM audit.dataset_changes")).scalar_one() > stamp
        conn.rollback()
    with governed.begin() as conn:
        conn.execute(sa.text("DROP TRIGGER woe_dataset_replicated ON ml.socio_market_snapshots"))
    cert = certify.certify(governed, "t")
    assert [c.name for c in cert.failed_checks] == ["change_tracking"]
    assert (
        "has no change trigger firing always for rows applied by logical replication"
        in cert.failed_checks[0].description
    )


def test_a_view_calling_a_function_that_reads_untracked_data_cannot_certify(governed):
    with governed.begin() as conn:
        conn.execute(
            sa.text(
                "CREATE FUNCTION ml.moving_target() RETURNS double precision LANGUAGE sql STABLE AS 'SELECT random()'"
            )
        )
        conn.execute(
            sa.text(
                "CREATE OR REPLACE VIEW ml.socio_market_feature_store_train_v AS "
                "SELECT listing_id, generation, t0, delta_vs_sold_median_30d + 0 * ml.moving_target() AS "
                "delta_vs_sold_median_30d, seller_trust_tier, ships, negotiable, item_condition, dmg_ai_prob, "
                "battery_health_pct, sold_at, feature_asof_ts FROM ml.socio_market_snapshots"
            )
        )
    cert = certify.certify(governed, "t")
    assert not cert.passed
    assert (
        "function ml.moving_target() is user-defined: what it reads cannot be tracked"
        in cert.failed_checks[0].description
    )


# 3. Implausible values -----------------------------------------------------------------------------------------

IMPLAUSIBLE = [
    ("sold_at = '2099-01-01'", "plausible_sold_at"),
    ("t0 = '1900-01-01', feature_asof_ts = '1900-01-01'", "plausible_t0"),
    ("t0 = '2099-01-01', sold_at = NULL", "plausible_t0"),
    ("t0 = 'infinity', sold_at = NULL", "plausible_t0"),
    ("feature_asof_ts = '-infinity'", "plausible_feature_asof_ts"),
    ("generation = 'iphone_99'", "known_generation"),
    ("delta_vs_sold_median_30d = 1e308", "range_delta_vs_sold_median_30d"),
]


@pytest.mark.parametrize(("assignment", "check"), IMPLAUSIBLE, ids=[c for _, c in IMPLAUSIBLE])
def test_implausible_values_fail_certification_and_are_recorded(governed, assignment, check):
    with governed.begin() as conn:
        conn.execute(sa.text(f"UPDATE ml.socio_market_snapshots SET {assignment} WHERE (listing_id, t0) = {_FIRST}"))
    before = len(certify.history(governed))
    cert = certify.certify(governed, "t")
    assert not cert.passed
    failed = {c.name: c.violations for c in cert.failed_checks}
    assert failed.get(check) == 1, failed
    assert len(certify.history(governed)) == before + 1
    assert certify.status(governed).reason.startswith("latest certification failed")
    assert f"failed checks: {', '.join(failed)}" in guard_refusal(governed)


def test_bounded_photo_counts(governed):
    with governed.begin() as conn:
        conn.execute(
            sa.text(
                "UPDATE ml.iphone_image_features SET n_photos = 32767 "
                "WHERE (listing_id, t0) = (SELECT listing_id, t0 FROM ml.iphone_image_features LIMIT 1)"
            )
        )
    cert = certify.certify(governed, "t")
    assert {c.name: c.violations for c in cert.failed_checks} == {"range_n_photos": 1}


# 4. Artifacts under a stale snapshot ---------------------------------------------------------------------------


@pytest.mark.parametrize("isolation", ["REPEATABLE READ", "SERIALIZABLE"])
def test_a_stale_snapshot_cannot_delete_a_model_promoted_since(governed, login, isolation):
    trainer = login("woe_trainer")
    stale = trainer.connect().execution_options(isolation_level=isolation)
    try:
        stale.begin()
        stale.execute(sa.text("SELECT count(*) FROM ml.woe_anchor_model_registry_v1")).scalar()  # the snapshot
        promote.promote(governed, KEY_B, "owner", "promoted after the trainer's snapshot")
        before = state(governed)
        with pytest.raises(DBAPIError, match="deleting a model must run in a READ COMMITTED transaction") as info:
            stale.execute(sa.text("SELECT ml.delete_woe_anchor_model(:k)"), {"k": KEY_B})
        assert info.value.orig.sqlstate == "25000", info.value
    finally:
        stale.rollback()
        stale.close()
    assert state(governed) == before and before["active"] == KEY_B


@pytest.mark.parametrize("isolation", ["REPEATABLE READ", "SERIALIZABLE"])
def test_a_stale_snapshot_cannot_edit_artifacts_even_as_owner(governed, isolation):
    stale = governed.connect().execution_options(isolation_level=isolation)
    try:
        stale.begin()
        stale.execute(sa.text("SELECT count(*) FROM ml.woe_anchor_map_v1")).scalar()
        promote.promote(governed, KEY_B, "owner", "promoted after the owner's snapshot")
        before = state(governed)
        for statement in [
            "DELETE FROM ml.woe_anchor_cuts_v1 WHERE model_key = :k AND fold_id IS NULL",
            "DELETE FROM ml.woe_anchor_map_v1 WHERE model_key = :k",
        ]:
            stale.execute(sa.text("SAVEPOINT attempt"))
            with pytest.raises(DBAPIError, match=f"of model '{KEY_B}' is immutable: DELETE") as info:
                stale.execute(sa.text(statement), {"k": KEY_B})
            assert info.value.orig.sqlstate == DENIED
            stale.execute(sa.text("ROLLBACK TO SAVEPOINT attempt"))
    finally:
        stale.rollback()
        stale.close()
    assert state(governed) == before


@pytest.mark.parametrize("isolation", ["REPEATABLE READ", "SERIALIZABLE"])
def test_a_stale_snapshot_cannot_promote_a_model_deleted_since(governed, login, isolation):
    promoter = login("woe_promoter")
    stale = promoter.connect().execution_options(isolation_level=isolation)
    try:
        stale.begin()
        stale.execute(sa.text("SELECT count(*) FROM ml.woe_anchor_model_registry_v1")).scalar()
        promote.delete_candidate(governed, KEY_B)
        before = state(governed)
        with pytest.raises(DBAPIError, match="promotion must run in a READ COMMITTED transaction") as info:
            stale.execute(sa.text("SELECT ml.promote_woe_anchor_model(:k, 'dana', 'stale')"), {"k": KEY_B})
        assert info.value.orig.sqlstate == "25000", info.value
    finally:
        stale.rollback()
        stale.close()
    assert state(governed) == before and before["active"] == KEY_A


# 5. Models nobody trained --------------------------------------------------------------------------------------


def test_a_hand_made_model_is_registered_but_never_promoted(governed, login):
    trainer, promoter = login("woe_trainer"), login("woe_promoter")
    forged = "tom_aft_v1_20260601_000009"
    with trainer.begin() as conn:  # the genuine model, back-dated, declared as alice, one WOE made up
        copy_model(
            conn, KEY_A, forged, woe="CASE WHEN band_name = 'trust' AND band_value = 'HIGH' THEN woe + 0.5 ELSE woe END"
        )
    with governed.connect() as conn:
        created = conn.execute(
            sa.text(
                "SELECT created_at > now() - interval '1 minute', created_db_user, created_by "
                "FROM ml.woe_anchor_model_registry_v1 WHERE model_key = :f"
            ),
            {"f": forged},
        ).one()
    assert tuple(created) == (True, trainer.url.username, "alice")  # stamped by the database
    before = state(governed)
    with pytest.raises(
        PromotionRefused,
        match=f"promotion of model '{forged}' refused: the certified data does not "
        r"reproduce it \(1 differences\): map trust=HIGH woe: stored",
    ):
        promote.promote(promoter, forged, "dana", "looks fine to me")
    assert state(governed) == before
    differences = registry.verify_provenance(promoter, forged)  # recorded, for the reviewers' checklist
    assert len(differences) == 1 and differences[0].startswith("map trust=HIGH woe: stored ")
    checks = {c.name: c for c in promote.preflight(promoter, forged)}
    assert checks["provenance"].passed is False and "trust=HIGH woe" in checks["provenance"].detail


# 6. Changed after review ----------------------------------------------------------------------------------------


def test_a_candidate_cannot_change_after_review(governed, login):
    trainer, promoter = login("woe_trainer"), login("woe_promoter")
    seen = registry.artifact_digest(promoter, KEY_B)
    before = state(governed)
    refused(
        trainer,
        "DELETE FROM ml.woe_anchor_map_v1 WHERE model_key = :k AND band_name = 'acc'",
        {"k": KEY_B},
        match="permission denied for table woe_anchor_map_v1",
    )
    refused(
        governed,
        "DELETE FROM ml.woe_anchor_map_v1 WHERE model_key = :k AND band_name = 'acc'",
        {"k": KEY_B},
        match=f"ml.woe_anchor_map_v1 of model '{KEY_B}' is immutable: DELETE is not allowed",
    )
    assert state(governed) == before
    promote.promote(promoter, KEY_B, "dana", "reviewed", expected_digest=seen)
    assert registry.active_model_key(governed) == KEY_B
    assert promote.history(governed)["artifact_sha256"].iloc[0] == seen


def test_promotion_refuses_a_digest_other_than_the_one_reviewed(governed, login):
    promoter = login("woe_promoter")
    before = state(governed)
    with pytest.raises(
        PromotionRefused,
        match=f"its artifact digest is {before['digests'][KEY_B]}, not {'0' * 64} that the reviewer saw",
    ):
        promote.promote(promoter, KEY_B, "dana", "reviewed", expected_digest="0" * 64)
    assert state(governed) == before


def test_the_derive_names_a_slot_that_is_no_value_of_its_band_instead_of_dropping_its_rows(governed):
    """A band schema whose slots for one band differ from the banding functions' (here trust's,
    moved by 100) shows those rows under a value naming the slot; every band still counts every row."""
    with governed.begin() as conn:
        break_glass(conn, "test: band schema 2 with trust's slots moved")
        conn.execute(
            sa.text(
                "INSERT INTO ml.woe_anchor_band_values_v1 (band_schema_version, band_name, band_column, band_value, slot) "
                "SELECT 2, band_name, band_column, band_value, slot + CASE WHEN band_name = 'trust' THEN 100 ELSE 0 END "
                "FROM ml.woe_anchor_band_values_v1 WHERE band_schema_version = 1"
            )
        )
        rows = conn.execute(
            sa.text(
                "SELECT band_name, band_value, n_pos + n_neg AS n FROM ml.woe_anchor_derive_v1("
                "'2026-08-01', 60, 1, -0.15, -0.05, 0.05, 0.15, 2) WHERE item = 'map'"
            )
        ).all()
    per_band: dict[str, int] = {}
    for r in rows:
        per_band[r.band_name] = per_band.get(r.band_name, 0) + r.n
    assert len(per_band) == 10 and len(set(per_band.values())) == 1, per_band
    trust = [r.band_value for r in rows if r.band_name == "trust"]
    # the banding functions give trust slots 7 to 11; band schema 2 has 107 to 111
    assert sorted(trust) == sorted(f"no value of band schema 2 has slot {slot}" for slot in range(7, 12)), trust
    assert all(not r.band_value.startswith("no value") for r in rows if r.band_name != "trust")


def test_a_break_glass_edit_is_recorded_and_caught_by_provenance(governed):
    with governed.begin() as conn:
        break_glass(conn, "repair: drop a value", KEY_B)
        conn.execute(
            sa.text(
                "DELETE FROM ml.woe_anchor_map_v1 WHERE model_key = :k AND fold_id IS NULL "
                "AND band_name = 'acc' AND band_value = 'acc_full'"
            ),
            {"k": KEY_B},
        )
    before = state(governed)
    with pytest.raises(PromotionRefused, match=r"\(5 differences\): map acc=acc_full n_neg: stored none, derived"):
        promote.promote(governed, KEY_B, "owner", "after the repair")
    assert state(governed) == before
    with governed.connect() as conn:
        assert (
            conn.execute(
                sa.text("SELECT reason FROM audit.break_glass_log WHERE model_key = :k"), {"k": KEY_B}
            ).scalar_one()
            == "repair: drop a value"
        )


# 7. In-place edits of a promoted model ---------------------------------------------------------------------------

SCORING_COLUMNS = [
    "base_logit = base_logit + 1",
    "base_rate = 0.5",
    "dsold_t1 = dsold_t1 - 1",
    "dsold_t4 = dsold_t4 + 1",
    "train_cutoff_ts = train_cutoff_ts - interval '1 day'",
    "half_life_days = 1",
    "eps = 2",
    "band_schema_version = 2",
    "code_sha256 = repeat('f', 64)",
    "created_by = 'mallory'",
    "metrics = '{\"x\": 1}'",
]


@pytest.mark.parametrize("assignment", SCORING_COLUMNS)
def test_no_column_of_a_registered_model_changes_even_for_the_owner(governed, assignment):
    before = state(governed)
    for key in (KEY_A, KEY_B):
        refused(
            governed,
            f"UPDATE ml.woe_anchor_model_registry_v1 SET {assignment} WHERE model_key = :k",
            {"k": key},
            match=f"model '{key}' is immutable: its registry row cannot change after registration",
        )
    assert state(governed) == before


# 8. Identity -------------------------------------------------------------------------------------------------------


def test_the_database_records_real_logins_beside_declared_actors(governed, login):
    promoter = login("woe_promoter")
    promote.promote(promoter, KEY_B, "somebody-else", "declared actor")
    row = promote.history(governed).iloc[0]
    assert (row["actor"], row["db_user"], row["actor_identity"]) == (
        "somebody-else",
        promoter.url.username,
        f"login:{promoter.url.username}",
    )


# 9. Nobody outside the project can stall governance -------------------------------------------------------------


def test_an_outside_login_cannot_take_or_hold_the_projects_locks(governed, login):
    outsider = login(None)
    with governed.begin() as conn:
        conn.execute(sa.text(f'GRANT USAGE ON SCHEMA ml, audit TO "{outsider.url.username}"'))
    for statement in [
        "SELECT ml.woe_anchor_lock_v1('promotion')",
        "SELECT * FROM ml.woe_anchor_locks_v1 FOR UPDATE",
        "LOCK TABLE ml.woe_anchor_locks_v1",
        "LOCK TABLE ml.woe_anchor_model_registry_v1",
        "LOCK TABLE audit.dataset_certifications",
    ]:
        refused(outsider, statement, match="permission denied")
    # Holding every advisory lock key it likes changes nothing for promotions.
    with outsider.connect() as conn:
        conn.execute(
            sa.text(
                "SELECT pg_advisory_lock(k) FROM generate_series(-5, 5) AS k, "
                "(VALUES (2294458197846082618)) AS v(x) WHERE k = 0 OR true"
            )
        )
        conn.execute(sa.text("SELECT pg_advisory_lock(2294458197846082618)"))
        started = time.monotonic()
        promote.promote(governed, KEY_B, "owner", "not stalled")
        assert time.monotonic() - started < 10
    assert registry.active_model_key(governed) == KEY_B


def test_waits_for_a_project_lock_are_bounded_with_a_clear_message(governed):
    holder = governed.connect()
    try:
        holder.begin()
        holder.execute(sa.text("SELECT ml.woe_anchor_lock_v1('promotion')"))
        started = time.monotonic()
        message = refused(
            governed, "SELECT ml.woe_anchor_lock_v1('promotion', interval '200 milliseconds')", sqlstate="WL001"
        )
        assert time.monotonic() - started < 5
        assert message.startswith(
            "the promotion lock is held by another session (promotions, rollbacks and "
            "deletions of models run one at a time); gave up after waiting 00:00:00.2"
        )
    finally:
        holder.rollback()
        holder.close()


def test_a_waiting_promotion_gives_up_with_lock_busy(governed):
    from woe_core.errors import LockBusy

    holder = governed.connect()
    outcome: list[object] = []
    try:
        holder.begin()
        holder.execute(sa.text("SELECT ml.woe_anchor_lock_v1('promotion')"))

        def attempt():
            try:
                with governed.begin() as conn:
                    conn.execute(sa.text("SET LOCAL lock_timeout = '300ms'"))
                    conn.execute(sa.text("SELECT ml.promote_woe_anchor_model(:k, 'a', 'b')"), {"k": KEY_B})
            except DBAPIError as exc:
                outcome.append(exc.orig.sqlstate)

        thread = threading.Thread(target=attempt, daemon=True)
        thread.start()
        thread.join(60)
        assert outcome, "the promotion should give up while the lock is held"
    finally:
        holder.rollback()
        holder.close()
    assert outcome == ["WL001"] and LockBusy
    assert registry.active_model_key(governed) == KEY_A


# 10. lock_dataset_sources ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("target", ["ml.woe_anchor_model_registry_v1", "pg_authid", "pg_class"])
def test_dataset_locks_lock_only_registered_datasets(governed, login, target):
    certifier = login("woe_certifier")
    refused(
        certifier,
        "SELECT audit.lock_dataset_sources(:t)",
        {"t": target},
        match="permission denied for function lock_dataset_sources",
    )
    message = refused(governed, "SELECT audit.lock_dataset_sources(:t)", {"t": target}, sqlstate="22023")
    assert message == (f"dataset '{target}' is not certifiable: allowed are 'ml.woe_anchor_feature_store_t0_v1_v'")
    with pytest.raises(Exception, match=f"unknown dataset '{target}'"), governed.begin() as conn:
        conn.execute(sa.text("SELECT audit.certify_dataset(:t, 'x')"), {"t": target})


# Break-glass ----------------------------------------------------------------------------------------------------


def test_ddl_on_governance_tables_is_logged_as_break_glass(governed):
    # Migrations' own DDL on the project's schemas is logged too; look only at what follows.
    with governed.connect() as conn:
        start = conn.execute(sa.text("SELECT coalesce(max(break_glass_id), 0) FROM audit.break_glass_log")).scalar()
    with governed.begin() as conn:
        conn.execute(sa.text("ALTER TABLE ml.woe_anchor_map_v1 DISABLE TRIGGER woe_anchor_map_v1_guard"))
        conn.execute(sa.text("ALTER TABLE ml.woe_anchor_map_v1 ENABLE ALWAYS TRIGGER woe_anchor_map_v1_guard"))
    with governed.connect() as conn:
        logged = conn.execute(
            sa.text(
                "SELECT reason, db_user = session_user FROM audit.break_glass_log WHERE break_glass_id > :s "
                "ORDER BY break_glass_id"
            ),
            {"s": start},
        ).all()
    assert [tuple(r) for r in logged] == [("DDL on ml.woe_anchor_map_v1: ALTER TABLE ml.woe_anchor_map_v1", True)] * 2


def test_the_guarded_views_name_the_datasets_max_age(engine):
    """The certification age is data (audit.certifiable_datasets); the views that name it must agree."""
    with engine.connect() as conn:
        max_age = conn.execute(
            sa.text("SELECT max_age::text FROM audit.certifiable_datasets WHERE dataset = :d"), {"d": DATASET}
        ).scalar_one()
        guarded = conn.execute(
            sa.text(
                "SELECT c.oid::regclass::text, pg_get_viewdef(c.oid) FROM pg_class AS c "
                "JOIN pg_namespace AS n ON n.oid = c.relnamespace "
                "WHERE n.nspname = 'ml' AND c.relkind = 'v' AND pg_get_viewdef(c.oid) LIKE '%require_certified_strict%'"
            )
        ).all()
    assert {name for name, _ in guarded} == {
        "ml.woe_anchor_scores_live_train_v",
        "ml.woe_anchor_scores_by_model_train_v",
    }
    for name, definition in guarded:
        assert f"require_certified_strict('{DATASET}'::text, '{max_age}'::interval)" in definition, (name, definition)


def test_scores_cannot_be_attached_to_a_model_registered_earlier(governed, login):
    trainer = login("woe_trainer")
    with (
        pytest.raises(
            DBAPIError,
            match=f"scores of model '{KEY_B}' can only be attached in the transaction that registers the model",
        ) as info,
        trainer.begin() as conn,
    ):
        table = conn.execute(sa.text("SELECT ml.woe_anchor_scores_stage_v1(:k)"), {"k": KEY_B}).scalar_one()
        conn.execute(
            sa.text(
                f"INSERT INTO {table} (model_key, generation, listing_id, t0, fold_id, is_oof, "
                "woe_logit, p_slow21, slow21) VALUES (:k, 'iphone_13', 1, now(), 0, true, 9, 1, 1)"
            ),
            {"k": KEY_B},
        )
        conn.execute(sa.text("SELECT ml.woe_anchor_scores_attach_v1(:k)"), {"k": KEY_B})
    assert info.value.orig.sqlstate == DENIED


def test_ddl_records_do_not_open_the_break_glass(governed):
    """A DDL record is written by the event trigger, not by a person: it allows nothing."""
    with governed.begin() as conn:
        conn.execute(sa.text("COMMENT ON TABLE ml.woe_anchor_map_v1 IS 'maps'"))
        assert (
            conn.execute(
                sa.text(
                    "SELECT count(*) FROM audit.break_glass_log WHERE NOT is_bypass AND xact_id = pg_current_xact_id()"
                )
            ).scalar_one()
            == 1
        )
        with pytest.raises(DBAPIError, match="is immutable"):
            conn.execute(sa.text("UPDATE ml.woe_anchor_map_v1 SET woe = 0 WHERE model_key = :k"), {"k": KEY_B})


# Findings of a review with real logins ------------------------------------------------------------------------


@pytest.mark.parametrize("isolation", ["REPEATABLE READ", "SERIALIZABLE"])
def test_a_certification_cannot_run_on_a_snapshot_taken_before_its_locks(governed, login, isolation):
    certifier = login("woe_certifier")
    before = state(governed)
    stale = certifier.connect().execution_options(isolation_level=isolation)
    try:
        stale.begin()
        stale.execute(sa.text("SELECT 1")).scalar()
        with pytest.raises(DBAPIError, match="certification must run in a READ COMMITTED transaction") as info:
            stale.execute(sa.text("SELECT audit.certify_dataset(:d, 'cert-bot')"), {"d": DATASET})
        assert info.value.orig.sqlstate == "25000"
    finally:
        stale.rollback()
        stale.close()
    assert state(governed) == before


def test_certification_age_is_measured_by_the_clock_not_the_transactions_start(governed):
    with governed.begin() as conn:
        break_glass(conn, "test: a two-second certification age")
        conn.execute(sa.text("UPDATE audit.certifiable_datasets SET max_age = interval '2 seconds'"))
    certify.certify(governed, "t")
    with governed.connect() as conn:
        conn.execute(sa.text("SELECT audit.fresh_certification_id(:d)"), {"d": DATASET})
        time.sleep(2.2)
        with pytest.raises(DBAPIError, match="is older than 00:00:02"):
            conn.execute(sa.text("SELECT audit.fresh_certification_id(:d)"), {"d": DATASET})
        conn.rollback()


def test_an_outsider_holding_a_partition_lock_delays_a_deletion_by_at_most_seconds(certified_engine, login):
    from datetime import UTC, datetime

    from woe_core import train
    from woe_core.errors import LockBusy

    candidate = train.train(certified_engine, train.TrainParams(datetime(2026, 8, 1, tzinfo=UTC), 60.0), "t").model_key
    with certified_engine.begin() as conn:
        derived_model(conn, KEY_B, half_life=90.0)
    outsider = login(None).connect()
    try:
        outsider.execute(
            sa.text(  # no privilege needed: it locks every partition of the scores table
                "SELECT count(*) FROM pg_class AS c, pg_partition_tree(c.oid) WHERE c.relname = 'woe_anchor_scores_v1'"
            )
        )
        started = time.monotonic()
        with pytest.raises(LockBusy, match=f"model '{candidate}' cannot be deleted now: another session has held"):
            promote.delete_candidate(certified_engine, candidate)
        assert time.monotonic() - started < 20
        promote.promote(certified_engine, KEY_B, "owner", "not stalled by the outsider")
    finally:
        outsider.rollback()
        outsider.close()
    assert registry.active_model_key(certified_engine) == KEY_B
    promote.delete_candidate(certified_engine, candidate)


def test_model_keys_are_never_reused(governed, login):
    trainer = login("woe_trainer")
    with pytest.raises(DBAPIError, match=f"model key '{KEY_B}' belonged to a deleted model"), trainer.begin() as conn:
        conn.execute(sa.text("SELECT ml.delete_woe_anchor_model(:k)"), {"k": KEY_B})
        derived_model(conn, KEY_B, half_life=7.0)  # a different model under the reviewed key
    assert KEY_B in state(governed)["digests"]
    promote.delete_candidate(trainer, KEY_B)
    with pytest.raises(DBAPIError, match="belonged to a deleted model"), trainer.begin() as conn:
        derived_model(conn, KEY_B, half_life=7.0)


def test_only_the_promotion_functions_take_the_promotion_lock(governed, login):
    for group in ("woe_trainer", "woe_promoter", "woe_certifier"):
        refused(
            login(group),
            "SELECT ml.woe_anchor_lock_v1('promotion')",
            match="permission denied for function woe_anchor_lock_v1",
        )


def test_nudged_cuts_are_refused(governed, login):
    trainer, promoter = login("woe_trainer"), login("woe_promoter")
    nudged = "tom_aft_v1_20260601_000008"
    with trainer.begin() as conn:
        copy_model(conn, KEY_B, nudged, c1="c1 + 9e-10")
    before = state(governed)
    with pytest.raises(PromotionRefused, match=r"\(1 differences\): final cuts c1: stored"):
        promote.promote(promoter, nudged, "dana", "looks the same")
    assert state(governed) == before


def test_four_eyes_can_be_enforced_by_the_database_for_every_client(governed, login):
    both = login("woe_trainer", "woe_promoter")
    with governed.begin() as conn:
        break_glass(conn, "policy: four-eyes for every client")
        conn.execute(sa.text("UPDATE ml.woe_anchor_governance_settings_v1 SET four_eyes = true"))
    with both.begin() as conn:
        derived_model(conn, "tom_aft_v1_20260601_000007", half_life=45.0, created_by="bob")
    before = state(governed)
    with pytest.raises(PromotionRefused, match=f"four-eyes: login:{both.url.username} registered it"):
        promote.promote(both, "tom_aft_v1_20260601_000007", "pat", "a declared actor is not another person")
    assert state(governed) == before
    promote.promote(login("woe_promoter"), "tom_aft_v1_20260601_000007", "pat", "another login")
    assert registry.active_model_key(governed) == "tom_aft_v1_20260601_000007"


OWNER_WITHOUT_RECORD = [
    (
        "INSERT INTO ml.woe_anchor_provenance_checks_v1 (model_key, certification_id, artifact_sha256, passed, failures) "
        f"SELECT '{KEY_B}', max(certification_id), repeat('0', 64), true, '{{}}' FROM audit.dataset_certifications",
        "is written only by ml.woe_anchor_verify_provenance_v1",
    ),
    ("DELETE FROM audit.dataset_changes", "audit.dataset_changes is append-only"),
    (
        "UPDATE ml.woe_anchor_band_values_v1 SET slot = 44 - slot",
        "is governance configuration: UPDATE needs a break-glass",
    ),
    ("DELETE FROM audit.dataset_row_checks WHERE check_name = 't0_safe'", "is governance configuration: DELETE"),
    ("UPDATE audit.certifiable_datasets SET max_age = interval '1 year'", "is governance configuration: UPDATE"),
    ("DELETE FROM audit.dataset_sources", "is written only by audit.certify_dataset"),
]


@pytest.mark.parametrize(("statement", "message"), OWNER_WITHOUT_RECORD, ids=[m for _, m in OWNER_WITHOUT_RECORD])
def test_the_owner_changes_governance_data_only_with_a_record(governed, statement, message):
    before = state(governed)
    refused(governed, statement, match=message)
    assert state(governed) == before


def test_backdating_the_change_marker_only_makes_the_data_stale(governed):
    assert guarded_rows(governed) > 0
    with governed.begin() as conn:
        conn.execute(sa.text("UPDATE audit.dataset_changes SET changed_at = '2000-01-01'"))
    assert re.search(DATA_CHANGED, guard_refusal(governed))


def test_replacing_a_function_or_view_is_recorded(governed):
    with governed.begin() as conn:
        conn.execute(
            sa.text(
                "CREATE OR REPLACE FUNCTION ml.woe_sigmoid(x double precision) RETURNS double precision "
                "LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$ SELECT 1.0 / (1.0 + exp(-greatest(least(x, "
                "700.0), -700.0))) $$"
            )
        )
        conn.execute(
            sa.text(
                "CREATE OR REPLACE VIEW ml.woe_anchor_scores_live_train_v AS "
                "SELECT * FROM ml.woe_anchor_scores_live_v1 "
                "WHERE audit.require_certified_strict('ml.woe_anchor_feature_store_t0_v1_v', "
                "interval '24 hours')"
            )
        )
    with governed.connect() as conn:
        logged = (
            conn.execute(
                sa.text("SELECT reason FROM audit.break_glass_log WHERE NOT is_bypass ORDER BY break_glass_id")
            )
            .scalars()
            .all()
        )
    assert any("CREATE FUNCTION ml.woe_sigmoid(double precision)" in r for r in logged), logged
    assert any("ml.woe_anchor_scores_live_train_v" in r for r in logged), logged


def test_a_view_using_a_user_defined_operator_cannot_certify(governed):
    statements = [
        "CREATE FUNCTION ml.adj(double precision, double precision) RETURNS double precision "
        "LANGUAGE sql IMMUTABLE AS 'SELECT $1 + $2'",
        "CREATE OPERATOR ml.## (LEFTARG = double precision, RIGHTARG = double precision, FUNCTION = ml.adj)",
        "CREATE OR REPLACE VIEW ml.socio_market_feature_store_train_v AS "
        "SELECT listing_id, generation, t0, delta_vs_sold_median_30d OPERATOR(ml.##) 0 AS delta_vs_sold_median_30d, "
        "seller_trust_tier, ships, negotiable, item_condition, dmg_ai_prob, battery_health_pct, sold_at, "
        "feature_asof_ts FROM ml.socio_market_snapshots",
    ]
    if CITUS_TARGET:  # the view is refused when it is created
        citus_refuses(governed, statements, "operator")
        assert certify.certify(governed, "t").passed
        return
    with governed.begin() as conn:
        for statement in statements:
            conn.execute(sa.text(statement))
    cert = certify.certify(governed, "t")
    assert not cert.passed
    assert "function ml.adj(double precision,double precision) is user-defined" in cert.failed_checks[0].description


def test_a_trainer_squatting_on_the_next_keys_score_table_does_not_block_training(certified_engine, login, monkeypatch):
    from datetime import UTC, datetime

    from woe_core import train

    moment = datetime(2026, 11, 28, 12, 0, 0, tzinfo=UTC)
    monkeypatch.setattr(train, "_now", lambda: moment)
    squatter = login("woe_trainer")
    with squatter.begin() as conn:
        conn.execute(sa.text("SELECT ml.woe_anchor_scores_stage_v1('tom_aft_v1_20261128_120000')"))
    result = train.train(certified_engine, train.TrainParams(datetime(2026, 8, 1, tzinfo=UTC), 60.0), "t")
    assert result.model_key == "tom_aft_v1_20261128_120000_2"
