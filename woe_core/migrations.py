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

# Applied scripts whose full-line comments were edited afterwards, their code untouched:
# version -> (the checksum the script had when it was applied, the checksum of its code
# lines, i.e. without full-line ``--`` comments, which today's file must still have).
# A ledger holding the old checksum is accepted; tests/test_migrations.py checks the code.
COMMENT_EDITS: dict[int, tuple[str, str]] = {
    1: (
        "77fe261aa1318a8544fa928ea8f13f6738bd40234a8c00c2ea2c91789374ba7a",
        "395d810521177a8b89945f167caf433eb12021bc09c55c970e3eaba67e04cabb",
    ),
    2: (
        "3be8cd08a5cd690487cf49f37ae7044301b2b21cfd22bf0210195c477bea76a1",
        "a08375e688f44adb5c24287fdefc11f97eb882e57246e9f65666af69a1812e3d",
    ),
    3: (
        "3b15d2ff2f0318baff4f063503541eeea88fe7828af3a2c8e4355165757bd519",
        "b358e01b8fa6c06a6425db69fa18b5b027284256de6b08ee9d0e87f72e8b2d72",
    ),
    4: (
        "8825e6a2884a8a75059be040f6f9f5be32555d4684abe2f4546739f096770bec",
        "d869e0a2023e78d931611b423db1512e92aae14464abe973b804e0aed87dacfd",
    ),
    6: (
        "bb20d4c4c33445655b5cdbc4f50772f36f08af8bd869b023ed1e7b0f2de1bacd",
        "36c6a2efd694cee5f2aeeef53018876a1a9caf64ade81ee5c68d278dabeadf95",
    ),
}
_COMMENT_LINE = re.compile(r"^\s*--")


def code_checksum(text: str) -> str:
    """sha256 hex of a script's lines other than full-line ``--`` comments."""
    code = "\n".join(line for line in text.split("\n") if not _COMMENT_LINE.match(line))
    return hashlib.sha256(code.encode("utf-8")).hexdigest()


def _matches(migration: Migration, applied_checksum: str) -> bool:
    """The applied script is this one: same checksum, or a listed comment-only edit of it."""
    if applied_checksum == migration.checksum:
        return True
    old, code = COMMENT_EDITS.get(migration.version, (None, None))
    return applied_checksum == old and code_checksum(migration.sql) == code


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
                if not _matches(current, row.checksum):
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
    return set(ledger) == {m.version for m in migrations} and all(_matches(m, ledger[m.version]) for m in migrations)


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
