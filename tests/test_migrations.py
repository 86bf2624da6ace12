import shutil
import time

import pytest
import sqlalchemy as sa

from woe_core import migrations
from woe_core.errors import MigrationError

SEED_OBJECTS = [
    "ml.woe_anchor_model_registry_v1",
    "ml.woe_anchor_cuts_v1",
    "ml.woe_anchor_map_v1",
    "ml.woe_anchor_scores_v1",
    "ml.v_woe_anchor_bands_live_v1",
    "ml.woe_anchor_scores_live_v1",
    "ml.woe_anchor_scores_live_train_v",
    "ml.woe_anchor_feature_store_t0_v1_v",
    "ml.socio_market_feature_store_train_v",
    "ml.iphone_image_features_unified_v1_train_v",
]


def test_fresh_database_gets_every_script_and_every_seed_object(empty_engine):
    applied = migrations.migrate(empty_engine)
    assert [m.version for m in applied] == [m.version for m in migrations.discover()]
    ledger = migrations.applied(empty_engine)
    assert [(r["version"], r["checksum"]) for r in ledger] == [(m.version, m.checksum) for m in applied]
    with empty_engine.connect() as conn:
        for name in SEED_OBJECTS:
            assert conn.execute(sa.text("SELECT to_regclass(:n)"), {"n": name}).scalar() is not None, name
        for fn in ("audit.dataset_sha256", "audit.require_certified_strict"):
            assert (
                conn.execute(
                    sa.text(
                        "SELECT count(*) FROM pg_proc WHERE oid::regproc::text = :f OR "
                        "pronamespace::regnamespace::text || '.' || proname = :f"
                    ),
                    {"f": fn},
                ).scalar()
                >= 1
            ), fn


def test_second_run_is_a_no_op(empty_engine):
    migrations.migrate(empty_engine)
    before = migrations.applied(empty_engine)
    assert migrations.migrate(empty_engine) == []
    assert migrations.applied(empty_engine) == before


def _copy_sql(tmp_path):
    target = tmp_path / "sql"
    shutil.copytree(migrations.SQL_DIR, target)
    return target


def test_edited_applied_script_is_refused_and_nothing_runs(empty_engine, tmp_path):
    sql_dir = _copy_sql(tmp_path)
    first = sorted(sql_dir.glob("V0001__*.sql"))[0]
    migrations.migrate(empty_engine, sql_dir)
    first.write_text(first.read_text() + "\n-- a harmless edit is still an edit\n")
    (sql_dir / "V9999__new_script.sql").write_text("CREATE TABLE ml.should_not_exist (x int);")
    with pytest.raises(MigrationError, match=rf"{first.name}.*edited after it was applied"):
        migrations.migrate(empty_engine, sql_dir)
    with empty_engine.connect() as conn:
        assert conn.execute(sa.text("SELECT to_regclass('ml.should_not_exist')")).scalar() is None


def test_failed_script_leaves_no_ledger_row_and_no_partial_objects(empty_engine, tmp_path):
    sql_dir = _copy_sql(tmp_path)
    migrations.migrate(empty_engine, sql_dir)
    (sql_dir / "V9000__broken.sql").write_text("CREATE TABLE ml.half_done (x int);\nSELECT no_such_function();\n")
    with pytest.raises(MigrationError, match="V9000__broken.sql.*failed"):
        migrations.migrate(empty_engine, sql_dir)
    with empty_engine.connect() as conn:
        assert conn.execute(sa.text("SELECT to_regclass('ml.half_done')")).scalar() is None
    assert 9000 not in [r["version"] for r in migrations.applied(empty_engine)]


@pytest.mark.parametrize(
    ("filename", "message"),
    [
        ("V1__short.sql", "must be named like"),
        ("V0005_one_underscore.sql", "must be named like"),
        ("V0005__Upper.sql", "must be named like"),
        ("notes.txt", "unexpected file 'notes.txt'"),
    ],
)
def test_misnamed_files_are_refused(tmp_path, filename, message):
    sql_dir = _copy_sql(tmp_path)
    (sql_dir / filename).write_text("SELECT 1;")
    with pytest.raises(MigrationError, match=message):
        migrations.discover(sql_dir)


def test_repeated_version_is_refused(tmp_path):
    sql_dir = _copy_sql(tmp_path)
    (sql_dir / "V0001__again.sql").write_text("SELECT 1;")
    with pytest.raises(MigrationError, match="two migrations share version 1"):
        migrations.discover(sql_dir)


def test_applied_script_missing_from_code_is_refused(empty_engine, tmp_path):
    sql_dir = _copy_sql(tmp_path)
    (sql_dir / "V9001__extra.sql").write_text("SELECT 1;")
    migrations.migrate(empty_engine, sql_dir)
    (sql_dir / "V9001__extra.sql").unlink()
    with pytest.raises(MigrationError, match="V9001__extra.sql was applied.*missing"):
        migrations.migrate(empty_engine, sql_dir)


def test_a_held_migration_lock_fails_with_a_clear_message_instead_of_hanging(empty_engine, monkeypatch):
    monkeypatch.setattr(migrations, "LOCK_WAIT_S", 1)
    holder = empty_engine.connect()
    try:
        holder.execute(sa.text("SELECT pg_advisory_lock(:k)"), {"k": migrations.LOCK_KEY})
        started = time.monotonic()
        with pytest.raises(MigrationError, match="another session has held the migration lock .* for 1 s"):
            migrations.migrate(empty_engine)
        assert time.monotonic() - started < 10
    finally:
        holder.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": migrations.LOCK_KEY})
        holder.close()
    assert len(migrations.migrate(empty_engine)) == len(migrations.discover())  # free again: all applied


def test_an_up_to_date_database_needs_neither_the_lock_nor_ddl(engine, monkeypatch):
    """A client whose login may not create anything still starts once nothing is pending."""
    monkeypatch.setattr(migrations, "LOCK_WAIT_S", 1)
    holder = engine.connect()
    try:
        holder.execute(sa.text("SELECT pg_advisory_lock(:k)"), {"k": migrations.LOCK_KEY})
        assert migrations.migrate(engine) == []
    finally:
        holder.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": migrations.LOCK_KEY})
        holder.close()


def test_listed_comment_edits_of_applied_scripts_left_their_code_alone():
    scripts = {m.version: m for m in migrations.discover()}
    for version, (old_checksum, code) in migrations.COMMENT_EDITS.items():
        assert scripts[version].checksum != old_checksum  # the file did change ...
        assert migrations.code_checksum(scripts[version].sql) == code  # ... in full-line comments only


def test_a_ledger_from_before_a_comment_edit_is_accepted(engine):
    version = min(migrations.COMMENT_EDITS)
    with engine.begin() as conn:
        conn.execute(
            sa.text("UPDATE audit.schema_migrations SET checksum = :c WHERE version = :v"),
            {"c": migrations.COMMENT_EDITS[version][0], "v": version},
        )
    assert migrations.migrate(engine) == []
    with engine.begin() as conn:  # any other checksum is still an edited script
        conn.execute(
            sa.text("UPDATE audit.schema_migrations SET checksum = :c WHERE version = :v"),
            {"c": "0" * 64, "v": version},
        )
    with pytest.raises(MigrationError, match="was edited after it was applied"):
        migrations.migrate(engine)
