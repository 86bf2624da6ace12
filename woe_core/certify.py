"""Dataset certification (docs/certification.md).

``certify`` asks the database to certify: ``audit.certify_dataset`` locks the
dataset's sources against writers, runs the contract, row, plausibility and
change-tracking checks and the hash on that frozen data and appends the outcome,
passed or failed, to ``audit.dataset_certifications`` (no role may write that
table directly). The database's ``audit.require_certified_strict`` then lets the guarded views serve
rows only while the latest certification passed, is younger than 24 hours and
the data has not changed since.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError

from .db import GUARD_SQLSTATE, woe_errors
from .display import human_duration
from .errors import InvalidParameter
from .identity import require_actor

ENTRYPOINT = "ml.woe_anchor_feature_store_t0_v1_v"


# The datasets the database may certify (audit.certifiable_datasets); their row
# checks live in audit.dataset_row_checks and run inside audit.certify_dataset.
CERTIFIABLE = (ENTRYPOINT,)


@dataclass(frozen=True)
class CheckResult:
    name: str
    description: str
    passed: bool
    violations: int


@dataclass(frozen=True)
class Certification:
    """One recorded certification run."""

    certification_id: int
    dataset: str
    certified_at: datetime
    certified_by: str
    passed: bool
    row_count: int | None
    dataset_sha256: str | None
    checks: list[CheckResult]
    duration_ms: float | None = None
    # The certified rows' oldest and newest edited_date and their latest recorded time
    # (audit.certifiable_datasets.end_columns); data_end is None before V0018.
    min_edited_date: datetime | None = None
    max_edited_date: datetime | None = None
    data_end: datetime | None = None

    @property
    def failed_checks(self) -> list[CheckResult]:
        return [c for c in self.checks if not c.passed]

    def summary(self) -> str:
        """One line: passed, or which checks failed and on how many rows."""
        if self.passed:
            return (
                f"{self.dataset}: certified #{self.certification_id}, {self.row_count:,} rows, "
                f"sha256 {self.dataset_sha256}"
            )
        failed = "; ".join(f"{c.name} ({c.violations:,} rows: {c.description})" for c in self.failed_checks)
        return f"{self.dataset}: certification #{self.certification_id} FAILED: {failed}"


def _dataset_spec(dataset: str) -> None:
    if dataset not in CERTIFIABLE:
        raise InvalidParameter(f"unknown dataset {dataset!r}; certifiable datasets: {', '.join(CERTIFIABLE)}")


def certify(engine: Engine, actor: str, dataset: str = ENTRYPOINT) -> Certification:
    """Have the database check, hash and record ``dataset``; return the recorded outcome.

    ``audit.certify_dataset`` does all of it inside PostgreSQL on data locked
    against writers, and stamps the time and the database login itself: no
    client can claim a certification. A failed certification is recorded too
    (and returned with ``passed=False``); callers decide how loudly to fail.
    """
    actor = require_actor(actor)
    _dataset_spec(dataset)
    with woe_errors(), engine.connect().execution_options(isolation_level="READ COMMITTED") as conn, conn.begin():
        new_id = conn.execute(sa.text("SELECT audit.certify_dataset(:d, :a)"), {"d": dataset, "a": actor}).scalar_one()
        row = conn.execute(sa.text(_SELECT_CERTS + " WHERE certification_id = :i"), {"i": new_id}).one()
    return _from_row(row)


@dataclass(frozen=True)
class CertificationStatus:
    """The latest certification of a dataset as the live guard sees it."""

    latest: Certification | None
    age: timedelta | None
    data_changed_at: datetime | None
    max_age: timedelta  # audit.certifiable_datasets.max_age: how long a certification stays fresh
    # The guard's own refusal when the recorded times say fresh but the guard does not
    # (on Citus: a write made on a worker, or a worker that cannot report its writes).
    guard_refusal: str | None = None

    @property
    def fresh(self) -> bool:
        """True when the guarded views would serve rows right now."""
        return (
            self.latest is not None
            and self.latest.passed
            and self.age is not None
            and self.age < self.max_age
            and (self.data_changed_at is None or self.data_changed_at <= self.latest.certified_at)
            and self.guard_refusal is None
        )

    @property
    def reason(self) -> str:
        """Why the guard would refuse, or 'fresh'."""
        if self.latest is None:
            return "never certified"
        if not self.latest.passed:
            return "latest certification failed: " + ", ".join(c.name for c in self.latest.failed_checks)
        if self.age is not None and self.age >= self.max_age:
            return f"latest certification is {human_duration(self.age)} old (limit {human_duration(self.max_age)})"
        if self.data_changed_at is not None and self.data_changed_at > self.latest.certified_at:
            return f"data changed at {self.data_changed_at:%Y-%m-%d %H:%M:%S %Z} after the latest certification"
        if self.guard_refusal is not None:
            return self.guard_refusal
        return "fresh"


def _from_row(r) -> Certification:
    checks = [CheckResult(**c) for c in (r.checks or [])]
    return Certification(
        r.certification_id,
        r.dataset,
        r.certified_at,
        r.certified_by,
        r.passed,
        r.row_count,
        r.dataset_sha256,
        checks,
        r.duration_ms,
        r.min_edited_date,
        r.max_edited_date,
        r.data_end,
    )


_SELECT_CERTS = """
    SELECT certification_id, dataset, certified_at, certified_by, passed, row_count, dataset_sha256,
           checks, duration_ms, min_edited_date, max_edited_date, data_end, now() - certified_at AS age
      FROM audit.dataset_certifications
"""


def status(engine: Engine, dataset: str = ENTRYPOINT) -> CertificationStatus:
    """The latest certification of ``dataset``, its age and whether the guard would pass."""
    _dataset_spec(dataset)
    with engine.connect() as conn:
        r = conn.execute(
            sa.text(_SELECT_CERTS + " WHERE dataset = :d ORDER BY certified_at DESC, certification_id DESC LIMIT 1"),
            {"d": dataset},
        ).one_or_none()
        changed = conn.execute(
            sa.text("SELECT changed_at FROM audit.dataset_changes WHERE dataset = :d"), {"d": dataset}
        ).scalar_one_or_none()
        max_age = conn.execute(
            sa.text("SELECT max_age FROM audit.certifiable_datasets WHERE dataset = :d"), {"d": dataset}
        ).scalar_one()
        if r is None:
            return CertificationStatus(None, None, changed, max_age)
        found = CertificationStatus(_from_row(r), r.age, changed, max_age)
        if found.fresh:  # the recorded times agree; the guard has the last word
            found = replace(found, guard_refusal=_guard_refusal(conn, dataset, max_age))
    return found


def _guard_refusal(conn: sa.Connection, dataset: str, max_age: timedelta) -> str | None:
    """The guard's message if it refuses ``dataset`` now, else None (other errors propagate)."""
    try:
        with conn.begin_nested():
            conn.execute(sa.text("SELECT audit.require_certified_strict(:d, :a)"), {"d": dataset, "a": max_age})
    except DBAPIError as exc:
        diag = getattr(exc.orig, "diag", None)
        if getattr(exc.orig, "sqlstate", None) != GUARD_SQLSTATE or diag is None:
            raise
        return str(diag.message_primary)
    return None


def history(engine: Engine, dataset: str = ENTRYPOINT, limit: int = 50) -> list[Certification]:
    """The most recent certifications of ``dataset``, newest first."""
    _dataset_spec(dataset)
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text(_SELECT_CERTS + " WHERE dataset = :d ORDER BY certified_at DESC, certification_id DESC LIMIT :n"),
            {"d": dataset, "n": int(limit)},
        ).all()
    return [_from_row(r) for r in rows]
