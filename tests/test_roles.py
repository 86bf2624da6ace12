"""Roles (docs/governance.md): reading scores, training, certifying and promoting are separate privileges.

Each test logs in as fresh LOGIN roles that are members of one group role
(woe_reader, woe_trainer, woe_certifier, woe_promoter) and checks what they may
and may not do. The login roles are dropped at teardown.
"""

from __future__ import annotations

import re

import pytest
import sqlalchemy as sa
from conftest import CITUS_TARGET, DATA_CHANGED, DEMO_LISTINGS, change_first_listing
from psycopg import sql
from sqlalchemy.exc import DBAPIError

from modelkit import derived_model, handwritten_map, insert_model
from woe_core import certify, demo, migrations, promote, registry, train
from woe_core.contract import SOCIO_STORE
from woe_core.errors import CertificationRequired, GovernanceRefused

GROUPS = ("woe_reader", "woe_trainer", "woe_certifier", "woe_promoter")
KEY_A = "tom_aft_v1_20260601_000001"
KEY_B = "tom_aft_v1_20260601_000002"
DENIED = "42501"  # insufficient_privilege


@pytest.fixture
def live(certified_engine):
    """Two complete models, KEY_A promoted through the promotion function."""
    with certified_engine.begin() as conn:
        derived_model(conn, KEY_A, half_life=60.0)
        derived_model(conn, KEY_B, half_life=90.0)
    promote.promote(certified_engine, KEY_A, "owner", "initial model")
    return certified_engine


def denied(engine, statement: str, params: dict | None = None, match: str = "permission denied") -> str:
    """Run ``statement`` as ``engine``'s login and return the refusal (SQLSTATE 42501)."""
    with pytest.raises(DBAPIError, match=match) as info, engine.begin() as conn:
        conn.execute(sa.text(statement), params or {})
    assert info.value.orig.sqlstate == DENIED, info.value
    return info.value.orig.diag.message_primary


def scalar(engine, statement: str, params: dict | None = None):
    with engine.begin() as conn:
        return conn.execute(sa.text(statement), params or {}).scalar()


def test_group_roles_exist_and_cannot_log_in(engine, login):
    with engine.connect() as conn:
        rows = dict(
            conn.execute(
                sa.text("SELECT rolname, rolcanlogin FROM pg_roles WHERE rolname = ANY (:g)"), {"g": list(GROUPS)}
            ).all()
        )
    assert rows == dict.fromkeys(GROUPS, False)


def test_reader_reads_guarded_scores_and_nothing_else(live, login):
    reader = login("woe_reader")
    snapshots = scalar(live, "SELECT count(*) FROM ml.woe_anchor_feature_store_t0_v1_v")
    assert (
        scalar(reader, "SELECT count(*) FROM ml.woe_anchor_scores_live_train_v WHERE model_key = :k", {"k": KEY_A})
        == snapshots
        > 0
    )
    # Readers may read the certified features themselves, never a model or an unguarded score.
    assert scalar(reader, "SELECT count(*) FROM ml.woe_anchor_feature_store_t0_v1_v") == snapshots
    stores = ["ml.socio_market_snapshots", "ml.iphone_image_features"]
    if CITUS_TARGET:
        # Citus runs shard queries as the session's user, so `woe distribute` grants the
        # entrypoint's readers the tables behind it (the same columns; docs/citus.md).
        for table in stores:
            assert scalar(reader, f"SELECT count(*) FROM {table}") > 0
        stores = []
    for table in [
        *stores,
        "ml.woe_anchor_model_registry_v1",
        "ml.woe_anchor_map_v1",
        "ml.woe_anchor_scores_live_v1",
        "ml.woe_anchor_scores_by_model_train_v",
        "ml.woe_anchor_promotions_v1",
        "audit.dataset_certifications",
    ]:
        denied(reader, f"SELECT * FROM {table} LIMIT 1")
    denied(
        reader,
        "INSERT INTO audit.dataset_certifications (dataset, certified_by, passed, checks) "
        "VALUES ('ml.woe_anchor_feature_store_t0_v1_v', 'reader', true, '[]')",
    )
    denied(reader, "DELETE FROM ml.woe_anchor_map_v1")
    denied(
        reader,
        "SELECT ml.promote_woe_anchor_model(:k, 'reader', 'why not')",
        {"k": KEY_B},
        match="permission denied for function promote_woe_anchor_model",
    )
    denied(reader, "SELECT ml.delete_woe_anchor_model(:k)", {"k": KEY_B})
    # Certification metadata is not public: a login that may use schema audit but holds
    # none of the roles cannot call the guard to probe certifications.
    outsider = login(None)
    with live.begin() as conn:
        conn.execute(sa.text(f'GRANT USAGE ON SCHEMA audit TO "{outsider.url.username}"'))
    denied(
        outsider,
        "SELECT audit.require_certified_strict('ml.woe_anchor_feature_store_t0_v1_v', '1 day')",
        match="permission denied for function require_certified_strict",
    )
    # The guard still fails closed for the reader once the data changes after certification.
    with live.begin() as conn:
        change_first_listing(conn)
    with (
        # on Citus the change is seen in the workers' counts (docs/citus.md)
        pytest.raises(DBAPIError, match=f"is not certified: ({DATA_CHANGED})") as info,
        reader.connect() as conn,
    ):
        conn.execute(sa.text("SELECT count(*) FROM ml.woe_anchor_scores_live_train_v")).scalar()
    assert info.value.orig.sqlstate == "WC001"


def test_the_certified_time_range_is_for_logins_that_may_read_the_dataset(live, login):
    statement = "SELECT count(*) FROM audit.certified_time_range('ml.woe_anchor_feature_store_t0_v1_v')"
    for group in ("woe_reader", "woe_trainer", "woe_certifier"):
        assert scalar(login(group), statement) == 1, group
    denied(login(None), statement)
    denied(login("woe_promoter"), statement)  # not granted: promoters do not read the data
    # Granted by hand to a login that may not read the dataset, it still refuses.
    nobody = login(None)
    with live.begin() as conn:
        conn.execute(sa.text(f'GRANT USAGE ON SCHEMA audit TO "{nobody.url.username}"'))
        conn.execute(sa.text(f'GRANT EXECUTE ON FUNCTION audit.certified_time_range(text) TO "{nobody.url.username}"'))
    assert "may not read dataset 'ml.woe_anchor_feature_store_t0_v1_v'" in denied(nobody, statement)
    with pytest.raises(DBAPIError, match="unknown dataset 'ml.nope'; certifiable datasets: ml.woe_anchor"):
        scalar(login("woe_reader"), "SELECT count(*) FROM audit.certified_time_range('ml.nope')")


def test_a_reader_is_told_the_certification_lapsed_rather_than_denied_a_table(live, login):
    """The time range of the Train and Compare pages: recorded while certified; after a change, a
    trainer reads it from the rows, and a reader (who may not) is told to certify."""
    reader, trainer = login("woe_reader"), login("woe_trainer")
    certified = train.data_window(reader)
    with live.begin() as conn:
        change_first_listing(conn)
    with pytest.raises(
        CertificationRequired,
        match=r"has no certification that holds now .* login '[^']+' may not read "
        + re.escape(SOCIO_STORE)
        + " to find its time range: certify it first",
    ):
        train.data_window(reader)
    assert train.data_window(trainer) == certified  # one flag flipped: the range is the same
    # A promoter is not granted the range at all: a woe_core error naming the function the pages show.
    with pytest.raises(GovernanceRefused, match="permission denied for function certified_time_range"):
        train.data_window(login("woe_promoter"))


def test_trainer_writes_and_deletes_candidates_but_cannot_promote(live, login):
    trainer = login("woe_trainer")
    key = "tom_aft_v1_20260601_000003"
    with trainer.begin() as conn:
        insert_model(conn, key, handwritten_map())
    assert scalar(live, "SELECT created_by FROM ml.woe_anchor_model_registry_v1 WHERE model_key = :k", {"k": key})
    assert scalar(trainer, "SELECT count(*) FROM ml.woe_anchor_feature_store_t0_v1_v") > 0
    assert (
        scalar(trainer, "SELECT count(*) FROM ml.woe_anchor_scores_by_model_train_v WHERE model_key = :k", {"k": key})
        > 0
    )
    with pytest.raises(DBAPIError, match="permission denied for table break_glass_log"), trainer.begin() as conn:
        insert_model(conn, "tom_aft_v1_20260601_000004", handwritten_map(), active=True)
    with (
        pytest.raises(DBAPIError, match="cannot be registered as active: new models start inactive"),
        trainer.begin() as conn,
    ):
        conn.execute(
            sa.text(
                "INSERT INTO ml.woe_anchor_model_registry_v1 (model_key, train_cutoff_ts, half_life_days, eps, n_folds, "
                "band_schema_version, code_sha256, is_active, base_rate, base_logit, dsold_t1, dsold_t2, dsold_t3, "
                "dsold_t4, created_by) SELECT 'tom_aft_v1_20260601_000004', train_cutoff_ts, half_life_days, eps, "
                "n_folds, band_schema_version, code_sha256, true, base_rate, base_logit, dsold_t1, dsold_t2, dsold_t3, "
                "dsold_t4, 't' FROM ml.woe_anchor_model_registry_v1 WHERE model_key = :k"
            ),
            {"k": key},
        )
    denied(
        trainer,
        "UPDATE ml.woe_anchor_model_registry_v1 SET is_active = (model_key = :k)",
        {"k": key},
        match="permission denied for table woe_anchor_model_registry_v1",
    )
    denied(
        trainer,
        "SELECT ml.promote_woe_anchor_model(:k, 'trainer', 'self-promotion')",
        {"k": key},
        match="permission denied for function promote_woe_anchor_model",
    )
    denied(
        trainer,
        "DELETE FROM ml.woe_anchor_model_registry_v1 WHERE model_key = :k",
        {"k": KEY_A},
        match="permission denied for table woe_anchor_model_registry_v1",
    )
    denied(
        trainer,
        "DELETE FROM ml.woe_anchor_map_v1 WHERE model_key = :k",
        {"k": key},
        match="permission denied for table woe_anchor_map_v1",
    )
    denied(
        trainer,
        "DELETE FROM ml.woe_anchor_scores_v1 WHERE model_key = :k",
        {"k": KEY_A},
        match="permission denied for table woe_anchor_scores_v1",
    )
    denied(
        trainer,
        "INSERT INTO audit.dataset_certifications (dataset, certified_by, passed, checks) "
        "VALUES ('ml.woe_anchor_feature_store_t0_v1_v', 'trainer', true, '[]')",
    )
    promote.delete_candidate(trainer, key)
    assert scalar(live, "SELECT count(*) FROM ml.woe_anchor_model_registry_v1 WHERE model_key = :k", {"k": key}) == 0
    assert registry.active_model_key(live) == KEY_A


def test_certifier_records_certifications_only(live, login):
    certifier = login("woe_certifier")
    name = certifier.url.username
    result = certify.certify(certifier, "cert-bot")
    assert result.passed, result.summary()
    assert (
        scalar(
            live,
            "SELECT db_user FROM audit.dataset_certifications WHERE certification_id = :i",
            {"i": result.certification_id},
        )
        == name
    )
    denied(certifier, "INSERT INTO ml.woe_anchor_model_registry_v1 (model_key) VALUES ('tom_aft_v1_20260601_000005')")
    if not CITUS_TARGET:  # on Citus the entrypoint's readers read its tables too (see the reader's test)
        denied(certifier, "SELECT * FROM ml.socio_market_snapshots LIMIT 1")
    denied(certifier, "SELECT ml.promote_woe_anchor_model(:k, 'cert-bot', 'x')", {"k": KEY_B})
    denied(certifier, "UPDATE audit.dataset_certifications SET passed = true")
    denied(
        certifier,
        "INSERT INTO audit.dataset_certifications (dataset, certified_by, passed, checks) "
        "VALUES ('ml.woe_anchor_feature_store_t0_v1_v', 'cert-bot', true, '[]')",
    )
    denied(certifier, "SELECT audit.lock_dataset_sources('ml.woe_anchor_model_registry_v1')")


def test_promoter_promotes_and_rolls_back_but_cannot_write_models(live, login):
    promoter = login("woe_promoter")
    checks = promote.preflight(promoter, KEY_B)
    assert all(c.passed is not False for c in checks), checks
    promote.promote(promoter, KEY_B, "dana", "better calibration")
    assert registry.active_model_key(live) == KEY_B
    assert promote.history(promoter)["db_user"].iloc[0] == promoter.url.username
    assert promote.rollback(promoter, "dana", "undo") == KEY_A
    with (
        pytest.raises(DBAPIError, match="permission denied for table woe_anchor_model_registry_v1"),
        promoter.begin() as conn,
    ):
        insert_model(conn, "tom_aft_v1_20260601_000006", handwritten_map())
    denied(promoter, "UPDATE ml.woe_anchor_model_registry_v1 SET is_active = false")
    denied(
        promoter,
        "INSERT INTO ml.woe_anchor_promotions_v1 (actor, to_model_key, reason) VALUES ('d', :k, 'r')",
        {"k": KEY_B},
    )
    denied(
        promoter,
        "SELECT ml.delete_woe_anchor_model(:k)",
        {"k": KEY_B},
        match="permission denied for function delete_woe_anchor_model",
    )
    denied(promoter, "SELECT count(*) FROM ml.woe_anchor_scores_live_train_v")


def test_a_promoter_still_needs_fresh_certification(demo_engine, login):
    with demo_engine.begin() as conn:
        insert_model(conn, KEY_A, handwritten_map())
    promoter = login("woe_promoter")
    with pytest.raises(CertificationRequired, match=f"promotion of model '{KEY_A}' refused: .* is not certified"):
        promote.promote(promoter, KEY_A, "dana", "no certificate")


def test_trainer_trains_promoter_promotes_reader_reads(certified_engine, login):
    trainer, promoter, reader = login("woe_trainer"), login("woe_promoter"), login("woe_reader")
    key = train.train(
        trainer, train.TrainParams(train.default_cutoff(*train.data_window(trainer)[:2])), "trainer-bot"
    ).model_key
    assert all(c.passed is not False for c in promote.preflight(promoter, key))
    promote.promote(promoter, key, "dana", "first trained model")
    snapshots = scalar(certified_engine, "SELECT count(*) FROM ml.woe_anchor_feature_store_t0_v1_v")
    assert (
        scalar(reader, "SELECT count(*) FROM ml.woe_anchor_scores_live_train_v WHERE model_key = :k", {"k": key})
        == snapshots
    )


def test_rows_a_trainer_leaves_in_the_training_table_do_not_reach_a_training(certified_engine, login):
    """Training's scratch table is writable by trainers (they fill it in their training); rows one
    commits there by hand are deleted by the next training, which trains the same model as without them."""
    trainer = login("woe_trainer")
    params = train.TrainParams(train.default_cutoff(*train.data_window(trainer)[:2]), 60.0, 1.0, 3)
    clean = train.train(trainer, params, "trainer-bot")
    assert scalar(trainer, f"SELECT count(*) FROM {train.TRAINING_ROWS}") == 0  # emptied after the commit
    with trainer.begin() as conn:  # 5,000 TRAIN rows of fold 0, all slow, all in the first band values
        conn.execute(
            sa.text(
                f"INSERT INTO {train.TRAINING_ROWS} SELECT g, 'iphone_13', :t, 0, true, 1, 1000.0, "
                "1, 7, 12, 15, 18, 24, 28, 36, 40, 0.99 FROM generate_series(1, 5000) AS g"
            ),
            {"t": params.train_cutoff_ts},
        )
    assert scalar(trainer, f"SELECT count(*) FROM {train.TRAINING_ROWS}") == 5000
    again = train.train(trainer, params, "trainer-bot")
    # the same rows (weights summed in another order on a cluster's shards)
    assert again.metrics["counts"] == pytest.approx(clean.metrics["counts"], rel=1e-12)
    assert again.base_logit == pytest.approx(clean.base_logit, rel=1e-12)
    maps = "SELECT fold_id, band_name, band_value, woe FROM ml.woe_anchor_map_v1 WHERE model_key = :k ORDER BY 1, 2, 3"
    with certified_engine.connect() as conn:
        first, second = (conn.execute(sa.text(maps), {"k": k}).all() for k in (clean.model_key, again.model_key))
    assert [r[:3] for r in first] == [r[:3] for r in second] and first
    assert all(a[3] == pytest.approx(b[3], rel=1e-9, abs=1e-12) for a, b in zip(first, second, strict=True))
    for group in ("woe_reader", "woe_promoter", "woe_certifier", None):
        denied(login(group), f"SELECT count(*) FROM {train.TRAINING_ROWS}")
        denied(login(group), f"DELETE FROM {train.TRAINING_ROWS}")


def test_a_session_locking_the_training_rows_cannot_stall_trainings(certified_engine, login, monkeypatch):
    """A trainer may lock the scratch table (its TRUNCATE right); a training then gives up after a wait,
    naming the table, and registers nothing."""
    monkeypatch.setattr(train, "TRAINING_ROWS_LOCK_WAIT", "1s")
    trainer = login("woe_trainer")
    params = train.TrainParams(train.default_cutoff(*train.data_window(trainer)[:2]), 60.0, 1.0, 3)
    with trainer.connect() as holder:
        holder.execute(sa.text(f"LOCK TABLE {train.TRAINING_ROWS} IN ACCESS EXCLUSIVE MODE"))
        with pytest.raises(train.TrainingError, match=f"held a lock on {train.TRAINING_ROWS} for 1s"):
            train.train(trainer, params, "trainer-bot")
        holder.rollback()
    assert scalar(certified_engine, "SELECT count(*) FROM ml.woe_anchor_model_registry_v1") == 0
    assert train.train(trainer, params, "trainer-bot").model_key


def test_nobody_but_the_owner_can_switch_is_active_by_hand(live, login):
    switch = "UPDATE ml.woe_anchor_model_registry_v1 SET is_active = (model_key = :k)"
    bypass = "INSERT INTO audit.break_glass_log (reason) VALUES ('let me')"
    for group in (*GROUPS, None):
        engine = login(group)
        denied(engine, bypass, match="permission denied for (table break_glass_log|schema audit)")
        denied(
            engine, switch, {"k": KEY_B}, match="permission denied for (table woe_anchor_model_registry_v1|schema ml)"
        )
    # Even a login granted UPDATE on the registry outright is stopped by the trigger.
    rogue = login(None)
    with live.begin() as conn:
        conn.connection.driver_connection.execute(
            sql.SQL(
                "GRANT USAGE ON SCHEMA ml TO {0}; GRANT SELECT, UPDATE ON ml.woe_anchor_model_registry_v1 TO {0}"
            ).format(sql.Identifier(rogue.url.username))
        )
    with pytest.raises(DBAPIError, match="is_active of model '.*' cannot be changed directly"), rogue.begin() as conn:
        conn.execute(sa.text(switch), {"k": KEY_B})
    assert registry.active_model_key(live) == KEY_A
    # The owner is refused too, unless it deliberately breaks the glass (logged, no history row).
    denied(live, switch, {"k": KEY_B}, match="cannot be changed directly")
    with live.begin() as conn:
        conn.execute(sa.text(bypass))
        conn.execute(sa.text("UPDATE ml.woe_anchor_model_registry_v1 SET is_active = false WHERE is_active"))
        conn.execute(
            sa.text("UPDATE ml.woe_anchor_model_registry_v1 SET is_active = true WHERE model_key = :k"), {"k": KEY_B}
        )
    assert registry.active_model_key(live) == KEY_B
    assert len(promote.history(live)) == 1
    assert scalar(live, "SELECT count(*) FROM audit.break_glass_log WHERE reason = 'let me'") == 1


def test_every_pure_function_is_granted_to_public_explicitly(engine):
    """The grant does not rest on PostgreSQL's default EXECUTE for PUBLIC (which a server may revoke)."""
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT p.oid::regprocedure::text, p.proacl IS NOT NULL AND EXISTS "
                "(SELECT FROM aclexplode(p.proacl) AS a WHERE a.grantee = 0 AND a.privilege_type = 'EXECUTE') "
                "FROM pg_proc AS p WHERE p.pronamespace = 'ml'::regnamespace AND p.provolatile = 'i' ORDER BY 1"
            )
        ).all()
    assert len(rows) >= 40  # the band, position, slot and scoring functions
    assert [name for name, granted in rows if not granted] == []


@pytest.mark.skipif(CITUS_TARGET, reason="migrates a database of its own with changed default privileges")
def test_readers_and_trainers_work_where_functions_are_not_executable_by_default(empty_engine, login_on_empty):
    """On a server whose default privileges revoke EXECUTE from PUBLIC, migrations still give the roles
    every function the live views and training call."""
    with empty_engine.begin() as conn:
        conn.execute(sa.text("ALTER DEFAULT PRIVILEGES REVOKE EXECUTE ON FUNCTIONS FROM PUBLIC"))
    migrations.migrate(empty_engine)
    with empty_engine.connect() as conn:
        assert not conn.execute(  # the revocation took: functions outside the grant are not executable by all
            sa.text(
                "SELECT has_function_privilege('public', 'ml.woe_slow21(timestamptz, timestamptz, timestamptz)', 'EXECUTE')"
            )
        ).scalar_one()
    demo.load_demo(empty_engine, DEMO_LISTINGS, seed=3)
    assert certify.certify(empty_engine, "owner").passed
    params = train.TrainParams(train.default_cutoff(*train.data_window(empty_engine)[:2]))
    promote.promote(empty_engine, train.train(empty_engine, params, "owner").model_key, "owner", "first model")
    reader, trainer = login_on_empty("woe_reader"), login_on_empty("woe_trainer")
    # The reader's columns call the banding, slot and sigmoid functions (a count(*) would call none).
    with reader.connect() as conn:
        scored = conn.execute(
            sa.text(
                "SELECT count(woe_anchor_p_slow21), count(DISTINCT dsold_band), count(DISTINCT presentation_band) "
                "FROM ml.woe_anchor_scores_live_train_v"
            )
        ).one()
    snapshots = scalar(empty_engine, "SELECT count(*) FROM ml.woe_anchor_feature_store_t0_v1_v")
    assert scored[0] == snapshots and scored[1] > 1 and scored[2] > 1
    assert train.train(trainer, params, "trainer-bot").model_key
