"""Roles (docs/governance.md): reading scores, training, certifying and promoting are separate privileges.

Each test logs in as fresh LOGIN roles that are members of one group role
(woe_reader, woe_trainer, woe_certifier, woe_promoter) and checks what they may
and may not do. The login roles are dropped at teardown.
"""

from __future__ import annotations

import uuid

import pytest
import sqlalchemy as sa
from psycopg import sql
from sqlalchemy.exc import DBAPIError

from modelkit import handwritten_map, insert_model
from woe_core import certify, promote, registry, train
from woe_core.errors import CertificationRequired

GROUPS = ("woe_reader", "woe_trainer", "woe_certifier", "woe_promoter")
KEY_A = "tom_aft_v1_20260601_000001"
KEY_B = "tom_aft_v1_20260601_000002"
DENIED = "42501"  # insufficient_privilege


@pytest.fixture
def login(engine):
    """Factory: ``login(group)`` creates a LOGIN role in ``group`` and returns an engine connected as it."""
    owner = engine
    with owner.connect() as conn:
        may_create = conn.execute(sa.text(
            "SELECT rolsuper OR rolcreaterole FROM pg_roles WHERE rolname = current_user")).scalar_one()
    if not may_create:
        pytest.skip("the test database role has neither SUPERUSER nor CREATEROLE, so login roles cannot be created "
                    "(WOE_TEST_DATABASE_URL points at a restricted role)")
    made: list[tuple[str, sa.Engine]] = []

    def make(group: str | None) -> sa.Engine:
        name = f"woe_t_{(group or 'nobody').removeprefix('woe_')}_{uuid.uuid4().hex[:12]}"
        password = uuid.uuid4().hex
        try:
            with owner.begin() as conn:
                raw = conn.connection.driver_connection
                raw.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(sql.Identifier(name),
                                                                               sql.Literal(password)))
                if group:
                    raw.execute(sql.SQL("GRANT {} TO {}").format(sql.Identifier(group), sql.Identifier(name)))
        except DBAPIError as exc:  # e.g. a CREATEROLE role without ADMIN OPTION on the group roles
            pytest.skip(f"cannot create a test login in {group}: {exc.orig}")
        engine = sa.create_engine(owner.url.set(username=name, password=password), poolclass=sa.pool.NullPool)
        made.append((name, engine))
        return engine

    yield make
    for name, engine in made:
        engine.dispose()
        with owner.begin() as conn:
            raw = conn.connection.driver_connection
            # REVOKE rather than DROP OWNED BY: a CREATEROLE (non-superuser) owner may revoke what it
            # granted but not act as the login. The logins own nothing, so DROP ROLE then succeeds.
            raw.execute(sql.SQL(
                "REVOKE ALL ON ALL TABLES IN SCHEMA ml, audit FROM {0}; "
                "REVOKE ALL ON ALL FUNCTIONS IN SCHEMA ml, audit FROM {0}; "
                "REVOKE ALL ON SCHEMA ml, audit FROM {0}; DROP ROLE {0}").format(sql.Identifier(name)))


@pytest.fixture
def live(certified_engine):
    """Two complete models, KEY_A promoted through the promotion function."""
    with certified_engine.begin() as conn:
        insert_model(conn, KEY_A, handwritten_map())
        insert_model(conn, KEY_B, handwritten_map(), base_logit=0.2)
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
        rows = dict(conn.execute(sa.text(
            "SELECT rolname, rolcanlogin FROM pg_roles WHERE rolname = ANY (:g)"), {"g": list(GROUPS)}).all())
    assert rows == dict.fromkeys(GROUPS, False)


def test_reader_reads_guarded_scores_and_nothing_else(live, login):
    reader = login("woe_reader")
    snapshots = scalar(live, "SELECT count(*) FROM ml.woe_anchor_feature_store_t0_v1_v")
    assert scalar(reader, "SELECT count(*) FROM ml.woe_anchor_scores_live_train_v WHERE model_key = :k",
                  {"k": KEY_A}) == snapshots > 0
    # The banding function inside the score views runs with the caller's rights and reads the entrypoint.
    assert scalar(reader, "SELECT count(*) FROM ml.woe_anchor_feature_store_t0_v1_v") == snapshots
    for table in ["ml.socio_market_snapshots", "ml.iphone_image_features", "ml.woe_anchor_model_registry_v1",
                  "ml.woe_anchor_map_v1", "ml.woe_anchor_scores_live_v1", "ml.woe_anchor_scores_by_model_train_v",
                  "ml.woe_anchor_promotions_v1", "audit.dataset_certifications"]:
        denied(reader, f"SELECT * FROM {table} LIMIT 1")
    denied(reader, "INSERT INTO audit.dataset_certifications (dataset, certified_by, passed, checks) "
                   "VALUES ('ml.woe_anchor_feature_store_t0_v1_v', 'reader', true, '[]')")
    denied(reader, "DELETE FROM ml.woe_anchor_map_v1")
    denied(reader, "SELECT ml.promote_woe_anchor_model(:k, 'reader', 'why not')", {"k": KEY_B},
           match="permission denied for function promote_woe_anchor_model")
    denied(reader, "SELECT ml.delete_woe_anchor_model(:k)", {"k": KEY_B})
    # Certification metadata is not public: a login that may use schema audit but holds
    # none of the roles cannot call the guard to probe certifications.
    outsider = login(None)
    with live.begin() as conn:
        conn.execute(sa.text(f'GRANT USAGE ON SCHEMA audit TO "{outsider.url.username}"'))
    denied(outsider, "SELECT audit.require_certified_strict('ml.woe_anchor_feature_store_t0_v1_v', '1 day')",
           match="permission denied for function require_certified_strict")
    # The guard still fails closed for the reader once the data changes after certification.
    with live.begin() as conn:
        conn.execute(sa.text("UPDATE ml.socio_market_snapshots SET ships = NOT ships "
                             "WHERE listing_id = (SELECT min(listing_id) FROM ml.socio_market_snapshots)"))
    with pytest.raises(DBAPIError, match="is not certified: its data changed") as info, reader.connect() as conn:
        conn.execute(sa.text("SELECT count(*) FROM ml.woe_anchor_scores_live_train_v")).scalar()
    assert info.value.orig.sqlstate == "WC001"


def test_trainer_writes_and_deletes_candidates_but_cannot_promote(live, login):
    trainer = login("woe_trainer")
    key = "tom_aft_v1_20260601_000003"
    with trainer.begin() as conn:
        insert_model(conn, key, handwritten_map())  # the bypass setting it turns on does not apply to a trainer
    assert scalar(live, "SELECT created_by FROM ml.woe_anchor_model_registry_v1 WHERE model_key = :k", {"k": key})
    assert scalar(trainer, "SELECT count(*) FROM ml.woe_anchor_feature_store_t0_v1_v") > 0
    assert scalar(trainer, "SELECT count(*) FROM ml.woe_anchor_scores_by_model_train_v WHERE model_key = :k",
                  {"k": key}) > 0
    with pytest.raises(DBAPIError, match="cannot be registered as active: new models start inactive"), \
            trainer.begin() as conn:
        insert_model(conn, "tom_aft_v1_20260601_000004", handwritten_map(), active=True)
    denied(trainer, "UPDATE ml.woe_anchor_model_registry_v1 SET is_active = (model_key = :k)", {"k": key},
           match="permission denied for table woe_anchor_model_registry_v1")
    denied(trainer, "SELECT ml.promote_woe_anchor_model(:k, 'trainer', 'self-promotion')", {"k": key},
           match="permission denied for function promote_woe_anchor_model")
    denied(trainer, "DELETE FROM ml.woe_anchor_model_registry_v1 WHERE model_key = :k", {"k": KEY_A},
           match=f"model '{KEY_A}' cannot be deleted: it is the active model")
    denied(trainer, "DELETE FROM ml.woe_anchor_map_v1 WHERE model_key = :k", {"k": KEY_A},
           match=f"ml.woe_anchor_map_v1 of model '{KEY_A}' cannot change")
    denied(trainer, "DELETE FROM ml.woe_anchor_scores_v1 WHERE model_key = :k", {"k": KEY_A},
           match="permission denied for table woe_anchor_scores_v1")
    denied(trainer, "INSERT INTO audit.dataset_certifications (dataset, certified_by, passed, checks) "
                    "VALUES ('ml.woe_anchor_feature_store_t0_v1_v', 'trainer', true, '[]')")
    promote.delete_candidate(trainer, key)
    assert scalar(live, "SELECT count(*) FROM ml.woe_anchor_model_registry_v1 WHERE model_key = :k", {"k": key}) == 0
    assert registry.active_model_key(live) == KEY_A


def test_certifier_records_certifications_only(live, login):
    certifier = login("woe_certifier")
    name = certifier.url.username
    result = certify.certify(certifier, "cert-bot")
    assert result.passed, result.summary()
    assert scalar(live, "SELECT db_user FROM audit.dataset_certifications WHERE certification_id = :i",
                  {"i": result.certification_id}) == name
    denied(certifier, "INSERT INTO ml.woe_anchor_model_registry_v1 (model_key) VALUES ('tom_aft_v1_20260601_000005')")
    denied(certifier, "SELECT * FROM ml.socio_market_snapshots LIMIT 1")
    denied(certifier, "SELECT ml.promote_woe_anchor_model(:k, 'cert-bot', 'x')", {"k": KEY_B})
    denied(certifier, "UPDATE audit.dataset_certifications SET passed = true")


def test_promoter_promotes_and_rolls_back_but_cannot_write_models(live, login):
    promoter = login("woe_promoter")
    checks = promote.preflight(promoter, KEY_B)
    assert all(c.passed for c in checks), checks
    promote.promote(promoter, KEY_B, "dana", "better calibration")
    assert registry.active_model_key(live) == KEY_B
    assert promote.history(promoter)["db_user"].iloc[0] == promoter.url.username
    assert promote.rollback(promoter, "dana", "undo") == KEY_A
    with pytest.raises(DBAPIError, match="permission denied for table woe_anchor_model_registry_v1"), \
            promoter.begin() as conn:
        insert_model(conn, "tom_aft_v1_20260601_000006", handwritten_map())
    denied(promoter, "UPDATE ml.woe_anchor_model_registry_v1 SET is_active = false")
    denied(promoter, "INSERT INTO ml.woe_anchor_promotions_v1 (actor, to_model_key, reason) VALUES ('d', :k, 'r')",
           {"k": KEY_B})
    denied(promoter, "SELECT ml.delete_woe_anchor_model(:k)", {"k": KEY_B},
           match="permission denied for function delete_woe_anchor_model")
    denied(promoter, "SELECT count(*) FROM ml.woe_anchor_scores_live_train_v")


def test_a_promoter_still_needs_fresh_certification(demo_engine, login):
    with demo_engine.begin() as conn:
        insert_model(conn, KEY_A, handwritten_map())
    promoter = login("woe_promoter")
    with pytest.raises(CertificationRequired, match=f"promotion of model '{KEY_A}' refused: .* is not certified"):
        promote.promote(promoter, KEY_A, "dana", "no certificate")


def test_trainer_trains_promoter_promotes_reader_reads(certified_engine, login):
    trainer, promoter, reader = login("woe_trainer"), login("woe_promoter"), login("woe_reader")
    key = train.train(trainer, train.TrainParams(train.default_cutoff(*train.data_window(trainer)[:2])),
                      "trainer-bot").model_key
    assert all(c.passed for c in promote.preflight(promoter, key))
    promote.promote(promoter, key, "dana", "first trained model")
    snapshots = scalar(certified_engine, "SELECT count(*) FROM ml.woe_anchor_feature_store_t0_v1_v")
    assert scalar(reader, "SELECT count(*) FROM ml.woe_anchor_scores_live_train_v WHERE model_key = :k",
                  {"k": key}) == snapshots


def test_nobody_but_the_owner_can_switch_is_active_by_hand(live, login):
    switch = "UPDATE ml.woe_anchor_model_registry_v1 SET is_active = (model_key = :k)"
    bypass = "SELECT set_config('woe.promoting', 'on', true)"
    for group in (*GROUPS, None):
        engine = login(group)
        with pytest.raises(DBAPIError, match="permission denied for (table woe_anchor_model_registry_v1|schema ml)") as info, \
                engine.begin() as conn:
            conn.execute(sa.text(bypass))
            conn.execute(sa.text(switch), {"k": KEY_B})
        assert info.value.orig.sqlstate == DENIED
    # Even a login granted UPDATE on the registry outright is stopped by the trigger.
    rogue = login(None)
    with live.begin() as conn:
        conn.connection.driver_connection.execute(
            sql.SQL("GRANT USAGE ON SCHEMA ml TO {0}; GRANT SELECT, UPDATE ON ml.woe_anchor_model_registry_v1 TO {0}")
            .format(sql.Identifier(rogue.url.username)))
    with pytest.raises(DBAPIError, match="is_active of model '.*' cannot be changed directly"), \
            rogue.begin() as conn:
        conn.execute(sa.text(bypass))
        conn.execute(sa.text(switch), {"k": KEY_B})
    assert registry.active_model_key(live) == KEY_A
    # The owner is refused too, unless it deliberately turns the bypass on (break-glass, no history row).
    denied(live, switch, {"k": KEY_B}, match="cannot be changed directly")
    with live.begin() as conn:
        conn.execute(sa.text(bypass))
        conn.execute(sa.text("UPDATE ml.woe_anchor_model_registry_v1 SET is_active = false WHERE is_active"))
        conn.execute(sa.text("UPDATE ml.woe_anchor_model_registry_v1 SET is_active = true WHERE model_key = :k"),
                     {"k": KEY_B})
    assert registry.active_model_key(live) == KEY_B
    assert len(promote.history(live)) == 1
