"""What the Home page and ``status`` show: database, data, certification, models.

The Home page is visited often, so its row counts cost the same at any size: below
``EXACT_BELOW`` rows (by the planner's estimate) they are exact counts, which take a
few milliseconds there; above it they are the planner's estimates, read from the table
statistics by ``EXPLAIN`` without touching a row, and marked as approximate. On Citus
the coordinator has no statistics for a distributed table, so the estimates add up the
statistics of its shards (``run_command_on_workers``: one round trip to the workers,
still without touching a row). The snapshot count is exact at any size while the latest
certification passed and the data have not changed since: it is the row count that
certification recorded.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from . import certify, db, registry
from .contract import IMAGE_STORE, SOCIO_STORE

EXACT_BELOW = 200_000
"""Stores the planner estimates below this many rows are counted exactly (tens of ms at most)."""


@dataclass(frozen=True)
class DataCounts:
    """Row counts of the feature stores; ``exact`` False means planner estimates (approximate)."""

    snapshots: int
    image_rows: int
    listings: int | None  # None: no statistics to estimate it from yet (before the first ANALYZE)
    counted_at: datetime
    exact: bool = True
    snapshots_exact: bool = True

    def show(self, name: str) -> str:
        """``name``'s count as text: exact with thousands separators, an estimate as '≈' and 3 significant digits."""
        value = getattr(self, name)
        if value is None:
            return "–"
        if self.exact or (name == "snapshots" and self.snapshots_exact):
            return f"{value:,}"
        return f"≈ {round(value, 2 - len(str(abs(value))) + 1) if value else 0:,}"


@dataclass(frozen=True)
class Overview:
    database: db.DatabaseInfo
    counts: DataCounts
    certification: certify.CertificationStatus
    active_model: str | None
    models: int


def planner_rows(conn: Connection, query: str) -> int:
    """The planner's estimate of the rows ``query`` returns (``EXPLAIN``: nothing is executed)."""
    plan = conn.execute(sa.text(f"EXPLAIN (FORMAT JSON) {query}")).scalar_one()
    return int(plan[0]["Plan"]["Plan Rows"])


# Whether ANALYZE has given the planner a distinct count of listing_id in a table the view
# reads; without one its DISTINCT estimate is a fixed default, not an estimate.
_HAS_LISTING_STATS = sa.text(
    "SELECT EXISTS (SELECT 1 FROM pg_rewrite AS r JOIN pg_depend AS d ON d.classid = 'pg_rewrite'::regclass "
    "AND d.objid = r.oid AND d.refclassid = 'pg_class'::regclass AND d.refobjid <> r.ev_class "
    "JOIN pg_class AS c ON c.oid = d.refobjid JOIN pg_namespace AS n ON n.oid = c.relnamespace "
    "JOIN pg_stats AS s ON s.schemaname = n.nspname AND s.tablename = c.relname AND s.attname = 'listing_id' "
    "WHERE r.ev_class = CAST(:view AS regclass))"
)


# The one distributed table a store view reads, on Citus (None on one node, or when the view reads
# several tables or none that Citus distributes).
_DISTRIBUTED_TABLE_OF = sa.text(
    "SELECT CASE WHEN count(DISTINCT d.refobjid) = 1 THEN min(d.refobjid::regclass::text) END FROM pg_rewrite AS r "
    "JOIN pg_depend AS d ON d.classid = 'pg_rewrite'::regclass AND d.objid = r.oid "
    "AND d.refclassid = 'pg_class'::regclass AND d.refobjid <> r.ev_class "
    "WHERE r.ev_class = CAST(:view AS regclass) "
    "AND d.refobjid IN (SELECT logicalrelid FROM pg_dist_partition WHERE partmethod = 'h')"
)
# On a worker, from the statistics of the shards it holds: rows of each store table, distinct
# listing ids of the socio-market one (the distribution column, so the shards' distinct counts
# add up), and whether every shard there has statistics yet. A ``format`` template: %1$L and
# %2$L are the two tables, quoted by PostgreSQL.
_WORKER_STATS = """
SELECT concat_ws('|', coalesce(sum(c.reltuples) FILTER (WHERE s.logicalrelid = %1$L::regclass), 0),
                 coalesce(sum(c.reltuples) FILTER (WHERE s.logicalrelid = %2$L::regclass), 0),
                 coalesce(sum(CASE WHEN st.n_distinct < 0 THEN -st.n_distinct * c.reltuples ELSE st.n_distinct END)
                          FILTER (WHERE s.logicalrelid = %1$L::regclass), 0),
                 coalesce(bool_and(c.reltuples >= 0
                                   AND (st.n_distinct IS NOT NULL OR s.logicalrelid <> %1$L::regclass)), true))
  FROM pg_dist_shard AS s
  JOIN pg_class AS c ON c.oid = to_regclass(shard_name(s.logicalrelid, s.shardid))
  JOIN pg_namespace AS n ON n.oid = c.relnamespace
  LEFT JOIN pg_stats AS st ON st.schemaname = n.nspname AND st.tablename = c.relname AND st.attname = 'listing_id'
 WHERE s.logicalrelid IN (%1$L::regclass, %2$L::regclass)
"""


def _distributed_table(conn: Connection, view: str) -> str | None:
    """The table Citus distributes behind ``view``, if it reads exactly one (None on one node)."""
    if conn.execute(sa.text("SELECT to_regclass('pg_catalog.pg_dist_partition') IS NULL")).scalar_one():
        return None
    return conn.execute(_DISTRIBUTED_TABLE_OF, {"view": view}).scalar_one()


def _shard_statistics(conn: Connection, socio: str, image: str) -> tuple[int, int, int] | None:
    """Rows of ``socio`` and ``image`` and distinct listings of ``socio``, added up from the statistics
    of their shards on every worker (one round trip); None unless every shard has statistics.

    On Citus the coordinator has no statistics for a distributed table (its own table is an
    empty shell, so ``EXPLAIN`` gives a fixed default); each shard has its own.
    """
    totals = [0.0, 0.0, 0.0]
    for ok, result in conn.execute(
        sa.text(
            "SELECT success, result FROM run_command_on_workers(format(CAST(:q AS text), CAST(:socio AS text), CAST(:image AS text)))"
        ),
        {"q": _WORKER_STATS, "socio": socio, "image": image},
    ):
        parts = result.split("|") if ok and result else []
        if len(parts) != 4 or parts[3] != "t":
            return None
        for i in range(3):
            totals[i] += float(parts[i])
    return round(totals[0]), round(totals[1]), round(totals[2])


def data_counts(
    engine: Engine, exact_below: int | None = None, certification: certify.CertificationStatus | None = None
) -> DataCounts:
    """Snapshots, image rows and distinct listings of the feature stores, at a cost that does not grow with them.

    ``certification`` (the current status, if the caller has it) supplies the exact
    snapshot count when its latest certification passed and the data have not changed
    since (whatever its age on one node; on Citus only while it is fresh, as only the
    guard sees writes made on the workers).
    """
    with engine.connect() as conn:
        socio_table, image_table = _distributed_table(conn, SOCIO_STORE), _distributed_table(conn, IMAGE_STORE)
        on_shards = _shard_statistics(conn, socio_table, image_table) if socio_table and image_table else None
        if on_shards is not None:
            snapshots, image_rows, _ = on_shards
        else:
            snapshots = planner_rows(conn, f"SELECT 1 FROM {SOCIO_STORE}")
            image_rows = planner_rows(conn, f"SELECT 1 FROM {IMAGE_STORE}")
        if max(snapshots, image_rows) < (EXACT_BELOW if exact_below is None else exact_below):
            c = conn.execute(
                sa.text(
                    f"SELECT (SELECT count(*) FROM {SOCIO_STORE}) AS snapshots, "
                    f"(SELECT count(*) FROM {IMAGE_STORE}) AS image_rows, "
                    f"(SELECT count(DISTINCT listing_id) FROM {SOCIO_STORE}) AS listings"
                )
            ).one()
            return DataCounts(c.snapshots, c.image_rows, c.listings, datetime.now(UTC))
        listings: int | None = None
        if on_shards is not None:
            listings = on_shards[2]
        elif conn.execute(_HAS_LISTING_STATS, {"view": SOCIO_STORE}).scalar_one():
            listings = min(planner_rows(conn, f"SELECT DISTINCT listing_id FROM {SOCIO_STORE}"), snapshots)
    latest = certification.latest if certification is not None else None
    certified = (
        certification is not None
        and latest is not None
        and latest.passed
        and latest.row_count is not None
        and (certification.data_changed_at is None or certification.data_changed_at <= latest.certified_at)
        # On Citus a write made on a worker moves no stamp on the coordinator: only the guard
        # (asked by certify.status while the certification is fresh) can vouch for no change.
        and certification.guard_refusal is None
        and (socio_table is None or certification.fresh)
    )
    if certified and latest is not None and latest.row_count is not None:
        snapshots = latest.row_count
    return DataCounts(snapshots, image_rows, listings, datetime.now(UTC), exact=False, snapshots_exact=certified)


def overview(engine: Engine) -> Overview:
    """Everything the landing page shows, read live (every read is bounded: see the module docstring)."""
    with engine.connect() as conn:
        models = conn.execute(sa.text("SELECT count(*) FROM ml.woe_anchor_model_registry_v1")).scalar_one()
    certification = certify.status(engine)
    return Overview(
        database=db.describe(engine),
        counts=data_counts(engine, certification=certification),
        certification=certification,
        active_model=registry.active_model_key(engine),
        models=models,
    )
