"""Dataset certification (docs/certification.md).

``certify`` locks the dataset's base tables against writers, runs the data checks
and the hash on that frozen data and appends the outcome, passed or failed, to ``audit.dataset_certifications``. The
database's ``audit.require_certified_strict`` then lets the guarded views serve
rows only while the latest certification passed, is younger than 24 hours and
the data has not changed since.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from .contract import contract_problems
from .display import human_duration
from .errors import InvalidParameter
from .identity import require_actor

ENTRYPOINT = "ml.woe_anchor_feature_store_t0_v1_v"
MAX_AGE = timedelta(hours=24)
CONTRACT_CHECK = "contract"


@dataclass(frozen=True)
class Check:
    """A data check: ``violation`` is a SQL predicate over a dataset row ``d``."""

    name: str
    description: str
    violation: str


# Row checks of the certified entrypoint, evaluated together in one scan.
ROW_CHECKS: tuple[Check, ...] = (
    Check("non_null_keys", "listing_id, generation, t0 and feature_asof_ts are never null",
          "d.listing_id IS NULL OR d.generation IS NULL OR d.t0 IS NULL OR d.feature_asof_ts IS NULL"),
    Check("t0_safe", "no feature is newer than its snapshot: feature_asof_ts <= t0",
          "d.feature_asof_ts > d.t0"),
    Check("positive_listing_id", "listing_id > 0", "d.listing_id <= 0"),
    Check("sold_not_before_t0", "sold_at, when set, is not before t0", "d.sold_at < d.t0"),
    Check("range_delta_vs_sold_median_30d", "delta_vs_sold_median_30d is null or finite and >= -1",
          "d.delta_vs_sold_median_30d IS NOT NULL AND NOT (d.delta_vs_sold_median_30d >= -1 "
          "AND d.delta_vs_sold_median_30d < 'Infinity'::double precision)"),
    Check("range_seller_trust_tier", "seller_trust_tier is null or one of HIGH, MEDIUM, LOW, NEW",
          "d.seller_trust_tier NOT IN ('HIGH', 'MEDIUM', 'LOW', 'NEW')"),
    Check("range_item_condition", "item_condition is null or one of new, like_new, good, fair, for_parts",
          "d.item_condition NOT IN ('new', 'like_new', 'good', 'fair', 'for_parts')"),
    Check("range_dmg_ai_prob", "dmg_ai_prob is null or in [0, 1]", "NOT (d.dmg_ai_prob BETWEEN 0 AND 1)"),
    Check("range_battery_health_pct", "battery_health_pct is null or in [0, 100]",
          "NOT (d.battery_health_pct BETWEEN 0 AND 100)"),
    Check("range_n_photos", "an image row has n_photos >= 0",
          "d.has_image_row AND (d.n_photos IS NULL OR d.n_photos < 0)"),
    Check("range_vision_scores", "an image row has photo_quality, lighting, background_clean in [0, 1]",
          "d.has_image_row AND NOT coalesce(d.photo_quality BETWEEN 0 AND 1 AND d.lighting BETWEEN 0 AND 1 "
          "AND d.background_clean BETWEEN 0 AND 1, false)"),
    Check("range_vision_damage_prob", "vision_damage_prob is null or in [0, 1]",
          "NOT (d.vision_damage_prob BETWEEN 0 AND 1)"),
)

# The datasets this module knows how to certify, with their row checks and keys.
DATASETS: dict[str, dict] = {
    ENTRYPOINT: {"checks": ROW_CHECKS, "key": ("listing_id", "t0")},
}


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

    @property
    def failed_checks(self) -> list[CheckResult]:
        return [c for c in self.checks if not c.passed]

    def summary(self) -> str:
        """One line: passed, or which checks failed and on how many rows."""
        if self.passed:
            return (f"{self.dataset}: certified #{self.certification_id}, {self.row_count:,} rows, "
                    f"sha256 {self.dataset_sha256}")
        failed = "; ".join(f"{c.name} ({c.violations:,} rows: {c.description})" for c in self.failed_checks)
        return f"{self.dataset}: certification #{self.certification_id} FAILED: {failed}"


def to_regclass_exists(conn, name: str) -> bool:
    return conn.execute(sa.text("SELECT to_regclass(:n) IS NOT NULL"), {"n": name}).scalar_one()


def _dataset_spec(dataset: str) -> dict:
    if dataset not in DATASETS:
        raise InvalidParameter(f"unknown dataset {dataset!r}; certifiable datasets: {', '.join(DATASETS)}")
    return DATASETS[dataset]


def _row_check_sql(dataset: str, checks: tuple[Check, ...]) -> str:
    # Identifiers and predicates are module constants (never user input).
    filters = ",\n".join(
        f"count(*) FILTER (WHERE {c.violation}) AS {c.name}" for c in checks
    )
    return (f"SELECT count(*) AS row_count, min(d.edited_date) AS min_edited_date, "
            f"max(d.edited_date) AS max_edited_date,\n{filters}\nFROM {dataset} AS d")


def _duplicate_sql(dataset: str, key: tuple[str, ...]) -> str:
    cols = ", ".join(key)
    return (f"SELECT coalesce(sum(n - 1), 0) FROM (SELECT count(*) AS n FROM {dataset} "
            f"GROUP BY {cols} HAVING count(*) > 1) AS dup")


def certify(engine: Engine, actor: str, dataset: str = ENTRYPOINT) -> Certification:
    """Check and hash ``dataset``, record the outcome, and return it.

    A failed certification is recorded too (and returned with ``passed=False``);
    callers decide how loudly to fail. The checks, the row count and the hash all
    read the same data: writers wait until the certification is recorded.
    """
    actor = require_actor(actor)
    spec = _dataset_spec(dataset)
    started = time.perf_counter()
    # READ COMMITTED, with the dataset's base tables locked against writers first:
    # the lock waits for writes in flight to commit, and every later statement sees
    # the same committed data (nobody can write until this transaction ends).
    with engine.connect().execution_options(isolation_level="READ COMMITTED") as conn, conn.begin():
        if to_regclass_exists(conn, dataset):
            conn.execute(sa.text("SELECT audit.lock_dataset_sources(:d)"), {"d": dataset})
        problems = contract_problems(conn)
        results: list[CheckResult]
        row_count = sha = min_date = max_date = None
        if problems:
            results = [CheckResult(CONTRACT_CHECK, "; ".join(problems), False, len(problems))]
        else:
            counts = conn.execute(sa.text(_row_check_sql(dataset, spec["checks"]))).mappings().one()
            row_count = int(counts["row_count"])
            min_date, max_date = counts["min_edited_date"], counts["max_edited_date"]
            duplicates = int(conn.execute(sa.text(_duplicate_sql(dataset, spec["key"]))).scalar_one())
            results = [
                CheckResult(CONTRACT_CHECK, "feature stores match the contract (columns and types)", True, 0),
                CheckResult("non_empty", "the dataset has at least one row", row_count > 0, 0 if row_count else 1),
                CheckResult("unique_snapshot_key", "(listing_id, t0) identifies one row",
                            duplicates == 0, duplicates),
            ] + [
                CheckResult(c.name, c.description, int(counts[c.name]) == 0, int(counts[c.name]))
                for c in spec["checks"]
            ]
            sha = conn.execute(sa.text("SELECT audit.dataset_sha256(:d, :k)"),
                               {"d": dataset, "k": list(spec["key"])}).scalar_one()
        passed = all(r.passed for r in results)
        duration_ms = (time.perf_counter() - started) * 1000.0
        row = conn.execute(
            sa.text(
                """
                INSERT INTO audit.dataset_certifications
                    (dataset, certified_by, passed, row_count, dataset_sha256,
                     min_edited_date, max_edited_date, checks, duration_ms)
                VALUES (:dataset, :actor, :passed, :row_count, :sha, :min_date, :max_date,
                        CAST(:checks AS jsonb), :duration_ms)
                RETURNING certification_id, certified_at
                """
            ),
            {
                "dataset": dataset, "actor": actor, "passed": passed, "row_count": row_count, "sha": sha,
                "min_date": min_date, "max_date": max_date,
                "checks": json.dumps([r.__dict__ for r in results]), "duration_ms": duration_ms,
            },
        ).one()
    return Certification(row.certification_id, dataset, row.certified_at, actor, passed, row_count, sha,
                         results, duration_ms)


@dataclass(frozen=True)
class CertificationStatus:
    """The latest certification of a dataset as the live guard sees it."""

    latest: Certification | None
    age: timedelta | None
    data_changed_at: datetime | None
    max_age: timedelta = MAX_AGE

    @property
    def fresh(self) -> bool:
        """True when the guarded views would serve rows right now."""
        return (self.latest is not None and self.latest.passed and self.age is not None
                and self.age < self.max_age
                and (self.data_changed_at is None or self.data_changed_at <= self.latest.certified_at))

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
        return "fresh"


def _from_row(r) -> Certification:
    checks = [CheckResult(**c) for c in (r.checks or [])]
    return Certification(r.certification_id, r.dataset, r.certified_at, r.certified_by, r.passed, r.row_count,
                         r.dataset_sha256, checks, r.duration_ms)


_SELECT_CERTS = """
    SELECT certification_id, dataset, certified_at, certified_by, passed, row_count, dataset_sha256,
           checks, duration_ms, now() - certified_at AS age
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
        changed = conn.execute(sa.text("SELECT changed_at FROM audit.dataset_changes WHERE dataset = :d"),
                               {"d": dataset}).scalar_one_or_none()
    if r is None:
        return CertificationStatus(None, None, changed)
    return CertificationStatus(_from_row(r), r.age, changed)


def history(engine: Engine, dataset: str = ENTRYPOINT, limit: int = 50) -> list[Certification]:
    """The most recent certifications of ``dataset``, newest first."""
    _dataset_spec(dataset)
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text(_SELECT_CERTS + " WHERE dataset = :d ORDER BY certified_at DESC, certification_id DESC LIMIT :n"),
            {"d": dataset, "n": int(limit)},
        ).all()
    return [_from_row(r) for r in rows]
