"""Versioned SQL migrations: ``sql/V0001__what_it_does.sql`` applied in order.

Each script runs in its own transaction together with its ledger row in
``audit.schema_migrations`` (version, name, checksum, applied_at, applied_by).
Re-running is a no-op; a script whose checksum differs from the one recorded
when it was applied is refused, as is a ledger entry whose file is gone. A
session-level advisory lock serialises concurrent runners (the app and a CLI).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError

from .db import PROJECT_ROOT, driver_connection
from .errors import MigrationError

PACKAGE_DIR = Path(__file__).resolve().parent


def _sql_dir() -> Path:
    """``woe_core/sql`` inside an installed package (the build copies ``sql/`` there), else ``sql/`` of the checkout."""
    packaged = Path(str(resources.files("woe_core") / "sql"))
    return packaged if packaged.is_dir() else PROJECT_ROOT / "sql"


SQL_DIR = _sql_dir()


def source_file(rel: str) -> Path:
    """A file named as in the repository (``woe_core/train.py``, ``sql/V0004__...sql``), in a checkout or installed."""
    top, _, rest = rel.partition("/")
    if top == "sql":
        return SQL_DIR / rest
    if top == "woe_core":
        return PACKAGE_DIR / rest
    raise ValueError(f"source_file takes a path under 'sql/' or 'woe_core/', got {rel!r}")


FILENAME_RE = re.compile(r"^V(?P<version>\d{4})__(?P<name>[a-z0-9]+(?:_[a-z0-9]+)*)\.sql$")
# pg_advisory_lock key: the first 8 bytes of sha256("woe_core.migrations"), as a signed int64.
LOCK_KEY = int.from_bytes(hashlib.sha256(b"woe_core.migrations").digest()[:8], "big", signed=True)
LOCK_WAIT_S = 60

LEDGER_DDL = """
CREATE SCHEMA IF NOT EXISTS audit;
CREATE TABLE IF NOT EXISTS audit.schema_migrations (
    version     integer PRIMARY KEY,
    name        text NOT NULL,
    checksum    text NOT NULL CHECK (checksum ~ '^[0-9a-f]{64}$'),
    applied_at  timestamptz NOT NULL DEFAULT now(),
    applied_by  text NOT NULL DEFAULT session_user
);
"""


@dataclass(frozen=True)
class Migration:
    """One versioned SQL script."""

    version: int
    name: str
    path: Path
    sql: str
    checksum: str  # sha256 hex of the file's text with line endings normalised to \\n


def discover(sql_dir: Path = SQL_DIR) -> list[Migration]:
    """Every script in ``sql_dir``, by version; refuses a misnamed file or a repeated version."""
    if not sql_dir.is_dir():
        raise MigrationError(f"migration folder {str(sql_dir)!r} does not exist")
    found: dict[int, Migration] = {}
    for path in sorted(sql_dir.iterdir()):
        if path.name.startswith(".") or path.is_dir():
            continue
        match = FILENAME_RE.match(path.name)
        if not match:
            raise MigrationError(
                f"unexpected file {path.name!r} in {str(sql_dir)!r}: migration files must be named "
                "like 'V0001__what_it_does.sql' (V, four digits, two underscores, lower-case words)"
            )
        version = int(match["version"])
        if version in found:
            raise MigrationError(
                f"two migrations share version {version}: {found[version].path.name!r} and {path.name!r}"
            )
        text = path.read_text(encoding="utf-8").replace("\r\n", "\n")
        checksum = hashlib.sha256(text.encode("utf-8")).hexdigest()
        found[version] = Migration(version, match["name"], path, text, checksum)
    return [found[v] for v in sorted(found)]


def migrate(engine: Engine, sql_dir: Path = SQL_DIR) -> list[Migration]:
    """Apply every pending migration in order; return the ones applied now."""
    migrations = discover(sql_dir)
    by_version = {m.version: m for m in migrations}
    applied_now: list[Migration] = []
    if _up_to_date(engine, migrations):
        return applied_now  # nothing to apply: no lock, no DDL (so a login without CREATE may start the app)
    with engine.connect() as conn:
        # Bounded: a session holding the key (a stuck runner, or any login) makes this fail
        # with a clear message instead of hanging the app's start.
        try:
            conn.execute(sa.text("SELECT set_config('lock_timeout', :t, false)"), {"t": f"{LOCK_WAIT_S}s"})
            conn.execute(sa.text("SELECT pg_advisory_lock(:k)"), {"k": LOCK_KEY})
        except OperationalError as exc:
            if getattr(exc.orig, "sqlstate", None) != "55P03":  # lock_not_available
                raise
            raise MigrationError(
                f"another session has held the migration lock (advisory key {LOCK_KEY}) for {LOCK_WAIT_S} s; "
                "wait for the other migration to finish, or end that session"
            ) from None
        finally:
            conn.rollback()
            conn.execute(sa.text("RESET lock_timeout"))
        conn.commit()
        try:
            with conn.begin():
                driver_connection(conn).execute(LEDGER_DDL)
            ledger = {
                row.version: row
                for row in conn.execute(sa.text("SELECT version, name, checksum FROM audit.schema_migrations"))
            }
            conn.commit()
            for version, row in sorted(ledger.items()):
                current = by_version.get(version)
                if current is None:
                    raise MigrationError(
                        f"migration V{version:04d}__{row.name}.sql was applied to this database but is "
                        f"missing from {str(sql_dir)!r}; this code is older than the database"
                    )
                if current.checksum != row.checksum:
                    raise MigrationError(
                        f"migration {current.path.name!r} was edited after it was applied: checksum "
                        f"{current.checksum[:12]}... differs from the applied {row.checksum[:12]}...; "
                        "never edit an applied migration, add a new V####__*.sql script instead"
                    )
            for migration in migrations:
                if migration.version in ledger:
                    continue
                with conn.begin():
                    try:
                        driver_connection(conn).execute(migration.sql)
                    except Exception as exc:
                        raise MigrationError(f"migration {migration.path.name!r} failed: {exc}") from exc
                    conn.execute(
                        sa.text("INSERT INTO audit.schema_migrations (version, name, checksum) VALUES (:v, :n, :c)"),
                        {"v": migration.version, "n": migration.name, "c": migration.checksum},
                    )
                applied_now.append(migration)
        finally:
            if conn.in_transaction():
                conn.rollback()
            conn.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": LOCK_KEY})
            conn.commit()
    return applied_now


def _up_to_date(engine: Engine, migrations: list[Migration]) -> bool:
    """True when the ledger lists exactly these scripts with these checksums (read-only; any doubt: False)."""
    with engine.connect() as conn:
        if conn.execute(sa.text("SELECT to_regclass('audit.schema_migrations')")).scalar() is None:
            return False
        if not conn.execute(sa.text("SELECT has_table_privilege('audit.schema_migrations', 'SELECT')")).scalar_one():
            return False
        ledger = {
            r.version: r.checksum
            for r in conn.execute(sa.text("SELECT version, checksum FROM audit.schema_migrations"))
        }
    return ledger == {m.version: m.checksum for m in migrations}


def applied(engine: Engine) -> list[dict]:
    """The ledger, oldest first (empty when no migration has run)."""
    with engine.connect() as conn:
        if conn.execute(sa.text("SELECT to_regclass('audit.schema_migrations')")).scalar() is None:
            return []
        rows = conn.execute(
            sa.text(
                "SELECT version, name, checksum, applied_at, applied_by FROM audit.schema_migrations ORDER BY version"
            )
        )
        return [dict(r._mapping) for r in rows]
