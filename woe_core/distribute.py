"""Lay a migrated database on a Citus coordinator out for scale (``woe distribute``).

The layout, and why:

* **Distributed by ``listing_id``**: every table the certified dataset reads (the demo's
  ``ml.socio_market_snapshots`` and ``ml.iphone_image_features``; a customer's own tables
  behind the store views), co-located, so the per-snapshot join of the stores runs shard by
  shard on the workers; and the row-level scores ``ml.woe_anchor_scores_v1``
  (list-partitioned per model; Citus distributes every partition with its parent, and
  partitions attached later), with the same shard count but in a co-location group of
  their own. Training attaches the new model's score partition (DDL) in the transaction
  that read the stores under the trainer's login, and the attaching function runs as its
  owner: Citus refuses DDL on a placement whose co-located placements were read over
  another connection ("cannot perform DDL on placement ... read over multiple
  connections"). No query joins scores with the stores; training's insert of its OOF
  scores from its own rows is repartitioned between the workers.
* **Training's rows** ``ml.woe_anchor_training_rows_v1`` (sql/V0020), distributed by
  ``listing_id`` next to the stores: training inserts them from the stores' join shard by
  shard, and its counts, order statistics, band sums and metrics run on the workers.
* **Everything else stays a local table of the coordinator**: the registry, cuts, maps,
  band values, certifications, change markers, promotions, deletions, provenance records,
  locks, settings and the break-glass log. They are small (kilobytes), and their
  governance triggers prove a write legitimate by a row the *current local transaction*
  wrote (``pg_current_xact_id()``) or by the call stack (``audit.called_from``). As reference
  tables those triggers would also fire on every worker's placement, where the transaction
  id is the worker's own and the call stack is Citus' shard command, so they would refuse
  legitimate writes. A query joining them with a distributed table gets them as one small
  intermediate result shipped to the workers.

What ``distribute`` changes besides the layout:

* the foreign key from the scores to the registry is dropped (Citus allows a distributed
  table to reference only a distributed or reference table). A score partition is still
  created, attached and dropped only by the project's training and deletion functions,
  in the transaction that registers or deletes its model;
* the roles that may read the certified entrypoint get SELECT on the distributed tables
  behind it: Citus sends the workers queries on the shards, run as the session's user,
  where one node would read them with the view owner's rights;
* change tracking: the tables' change triggers are created on every shard (with
  ``citus.enable_unsafe_triggers``) and fire on the workers, where they count in
  ``audit.dataset_shard_counts``, distributed co-located with the stores so that every
  store shard's counter is on its node (sql/V0015; docs/citus.md says how the guard reads
  them). Every worker also gets V0011's node-local ``audit.dataset_shard_changes``, used
  only while ``create_distributed_table`` copies existing rows into shards its metadata
  does not list yet.

Each step runs in its own transaction: a run that fails part-way (a worker down) leaves
the steps done so far, and running it again finishes the rest. Running it on a database
that has the layout does nothing. On a server without Citus it refuses with
``CitusRequired``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from .db import mask_url
from .errors import CitusRequired

DATASET = "ml.woe_anchor_feature_store_t0_v1_v"
SCORES = "ml.woe_anchor_scores_v1"
# Training's scratch rows (sql/V0020), sharded next to the stores.
TRAINING_ROWS = "ml.woe_anchor_training_rows_v1"
# The change counters, one row per store shard in the co-located counter shard (sql/V0015).
COUNTERS = "audit.dataset_shard_counts"
COUNTER_KEY = "shard_key"
DISTRIBUTION_COLUMN = "listing_id"

# The change counters a worker keeps for the shards it holds (sql/V0011: same table as on the coordinator).
WORKER_MARKERS_DDL = (
    "CREATE TABLE IF NOT EXISTS audit.dataset_shard_changes "
    "(dataset text NOT NULL, shard text NOT NULL, changes bigint NOT NULL, PRIMARY KEY (dataset, shard))"
)
# The functions the change triggers run on the workers: Citus copies a trigger's own function with it,
# not the functions that one calls.
WORKER_FUNCTIONS = (
    "audit.citus_shard_id(oid)",
    "audit.shard_counter_of(bigint)",
    "audit.counter_key(bigint)",
    "audit.note_dataset_change()",
    "audit.counts_only_up()",
    "audit.forbid_rewrite()",
)


@dataclass
class DistributeResult:
    """What one run did (empty lists: the database already had the layout)."""

    distributed: list[str] = field(default_factory=list)
    dropped_foreign_keys: list[str] = field(default_factory=list)
    worker_markers: list[str] = field(default_factory=list)
    granted: list[str] = field(default_factory=list)
    rekeyed_counter_shards: list[int] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(
            self.distributed
            or self.dropped_foreign_keys
            or self.worker_markers
            or self.granted
            or self.rekeyed_counter_shards
        )


def distribution_column(table: str) -> str:
    """The column ``table`` is distributed by in the layout."""
    return COUNTER_KEY if table == COUNTERS else DISTRIBUTION_COLUMN


def citus_version(conn: sa.Connection) -> str | None:
    """The installed Citus extension's version in this database, or None."""
    return conn.execute(sa.text("SELECT extversion FROM pg_extension WHERE extname = 'citus'")).scalar()


def is_distributed(conn: sa.Connection, table: str) -> bool:
    """Whether ``table`` is a Citus distributed table (False on a server without Citus)."""
    if citus_version(conn) is None:
        return False
    return bool(
        conn.execute(
            sa.text("SELECT EXISTS (SELECT FROM pg_dist_partition WHERE logicalrelid = CAST(:t AS regclass))"),
            {"t": table},
        ).scalar_one()
    )


def require_citus_coordinator(engine: Engine) -> str:
    """The Citus version; ``CitusRequired`` naming what is missing when this is not a migrated Citus coordinator."""
    where = mask_url(engine.url)
    with engine.connect() as conn:
        version = citus_version(conn)
        if version is None:
            available = conn.execute(
                sa.text("SELECT count(*) FROM pg_available_extensions WHERE name = 'citus'")
            ).scalar_one()
            raise CitusRequired(
                f"distribute needs the Citus extension, and the database at {where!r} has none "
                + (
                    "(it is available on this server: CREATE EXTENSION citus, as a superuser, on the coordinator)"
                    if available
                    else "(this server does not have Citus installed: use a Citus coordinator, "
                    "e.g. python scripts/citus_cluster.py start, or a managed Citus service)"
                )
            )
        if not conn.execute(sa.text("SELECT citus_is_coordinator()")).scalar_one():
            raise CitusRequired(
                f"distribute must run on the Citus coordinator; {where!r} is not one "
                "(SELECT citus_set_coordinator_host(...) on the coordinator registers it)"
            )
        if conn.execute(sa.text("SELECT to_regclass(:t)"), {"t": SCORES}).scalar() is None:
            raise CitusRequired(
                f"the database at {where!r} is not migrated (no {SCORES}): run python -m woe_core init-db first"
            )
    return version


def _plan(conn: sa.Connection) -> tuple[list[str], list[tuple[str, str]]]:
    """The tables to distribute (sources first, then the training rows, scores last) and the foreign keys
    that must go."""
    sources = [
        r[0]
        for r in conn.execute(
            sa.text(
                "SELECT s.identity FROM audit.dataset_source_objects(:d) AS s JOIN pg_class AS c ON c.oid = s.objid "
                "WHERE s.kind IN ('r', 'p') AND NOT c.relispartition ORDER BY s.identity DESC"
            ),
            {"d": DATASET},
        )
    ]
    tables = [*sources, TRAINING_ROWS, SCORES]
    missing = [
        t
        for t in tables
        if not conn.execute(
            sa.text(
                "SELECT EXISTS (SELECT FROM pg_attribute WHERE attrelid = to_regclass(:t) AND attname = :c "
                "AND NOT attisdropped)"
            ),
            {"t": t, "c": DISTRIBUTION_COLUMN},
        ).scalar_one()
    ]
    if missing:
        raise CitusRequired(
            f"cannot distribute by {DISTRIBUTION_COLUMN}: {', '.join(missing)} has no column {DISTRIBUTION_COLUMN}"
        )
    fks = [
        (r[0], r[1])
        for r in conn.execute(
            sa.text(
                "SELECT conrelid::regclass::text, conname FROM pg_constraint "
                "WHERE contype = 'f' AND conrelid = ANY (CAST(:tables AS regclass[])) "
                "AND NOT (confrelid = ANY (CAST(:tables AS regclass[]))) ORDER BY 1, 2"
            ),
            {"tables": tables},
        )
    ]
    return tables, fks


def _distributed(conn: sa.Connection) -> dict[str, int]:
    rows = conn.execute(sa.text("SELECT logicalrelid::regclass::text, colocationid FROM pg_dist_partition"))
    return {r[0]: r[1] for r in rows}


def distribute(engine: Engine) -> DistributeResult:
    """Bring a migrated database on a Citus coordinator to the layout above; a second run changes nothing."""
    require_citus_coordinator(engine)
    result = DistributeResult()
    with engine.connect() as conn:
        tables, fks = _plan(conn)
        conn.rollback()
    for table, constraint in fks:
        with engine.begin() as conn:
            conn.execute(sa.text(f'ALTER TABLE {table} DROP CONSTRAINT "{constraint}"'))
        result.dropped_foreign_keys.append(f"{table}.{constraint}")
    with engine.begin() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT nodename || ':' || nodeport, success, result FROM run_command_on_workers("
                "'SELECT to_regclass(''audit.dataset_shard_changes'') IS NOT NULL')"
            )
        ).all()
        missing_on = [r[0] for r in rows if not r[1] or r[2] != "t"]
    if missing_on:
        with engine.begin() as conn:
            for node, ok, text in conn.execute(
                sa.text("SELECT nodename || ':' || nodeport, success, result FROM run_command_on_workers(:c)"),
                {"c": WORKER_MARKERS_DDL},
            ):
                if not ok:
                    raise CitusRequired(f"cannot create the change markers on worker {node}: {text}")
        result.worker_markers = missing_on
    with engine.begin() as conn:
        for function in WORKER_FUNCTIONS:
            # (NULL for a function of a later migration than the database has: created
            # after distribution, Citus propagates it when the migration runs.)
            distributed = conn.execute(
                sa.text(
                    "SELECT to_regprocedure(:f) IS NULL OR EXISTS (SELECT FROM pg_dist_object "
                    "WHERE classid = 'pg_proc'::regclass AND objid = to_regprocedure(:f))"
                ),
                {"f": function},
            ).scalar_one()
            if not distributed:
                conn.execute(sa.text("SELECT create_distributed_function(:f)"), {"f": function})
    with engine.begin() as conn:
        # The guard asks the workers for their change counts: only the leader of a query
        # may (a server without Citus lets every parallel worker check it, see V0012).
        # Only when needed: a second run makes no DDL at all (DDL on audit is logged).
        guard = "audit.require_certified_strict(text, interval)"
        if (
            conn.execute(
                sa.text("SELECT proparallel FROM pg_proc WHERE oid = CAST(:f AS regprocedure)"), {"f": guard}
            ).scalar_one()
            != "r"
        ):
            conn.execute(sa.text(f"ALTER FUNCTION {guard} PARALLEL RESTRICTED"))
    sources = tables[:-2]
    # The counters first, in a co-location group of their own, and every store in theirs:
    # from the moment a store's shards exist, each has its counter shard on its node. (A
    # database distributed before the counters existed gets them in its stores' group.)
    for table in [COUNTERS, *tables]:
        with engine.begin() as conn:
            distributed = _distributed(conn)
            if table in distributed:
                continue
            # The change triggers (statement and row) go onto every shard; Citus refuses
            # tables with triggers unless this is on for the distributing transaction.
            conn.execute(sa.text("SET LOCAL citus.enable_unsafe_triggers = on"))
            if table == COUNTERS:
                colocate = next((t for t in sources if t in distributed), "none")
            else:
                colocate = "none" if table == SCORES else COUNTERS
            conn.execute(
                sa.text("SELECT create_distributed_table(CAST(:t AS regclass), :c, colocate_with => :w)"),
                {"t": table, "c": distribution_column(table), "w": colocate},
            )
        result.distributed.append(table)
    result.rekeyed_counter_shards = _rekey_counters(engine)
    result.granted = _grant_source_reads(engine, sources)
    return result


# One counter shard's rows keyed as before sql/V0021 (by the shard's id, which need not hash into
# the shard) get audit.counter_key(shard), on the node holding the shard and in one transaction
# there; a row the trigger has counted under the new key since is added to. A format() template
# for run_command_on_shards (%1$s: the shard's name). The triggers that keep counts from going
# down (V0015) fire on the shard itself, where ALTER TABLE on the distributed table does not reach:
# those enabled are paused for this transaction's delete and re-insert, then enabled as they were.
_REKEY_SHARD = """
DO $rekey$
DECLARE
    tbl       regclass := %1$L;
    new_key   bigint := audit.counter_key(substring(%1$L from '_([0-9]+)"?$')::bigint);
    paused    text[];
    trig      text;
BEGIN
    IF NOT EXISTS (SELECT FROM %1$s AS c WHERE c.shard_key <> new_key) THEN
        RETURN;
    END IF;
    SELECT coalesce(array_agg(t.tgname), '{}') INTO paused
      FROM pg_catalog.pg_trigger AS t WHERE t.tgrelid = tbl AND NOT t.tgisinternal AND t.tgenabled = 'A';
    FOREACH trig IN ARRAY paused LOOP
        EXECUTE format('ALTER TABLE %%s DISABLE TRIGGER %%I', tbl, trig);
    END LOOP;
    WITH old AS (DELETE FROM %1$s AS c WHERE c.shard_key <> new_key
                 RETURNING c.dataset, c.shard, c.node_group, c.changes)
    INSERT INTO %1$s AS c (shard_key, dataset, shard, node_group, changes)
    SELECT new_key, o.dataset, o.shard, o.node_group, sum(o.changes) FROM old AS o
     GROUP BY o.dataset, o.shard, o.node_group
    ON CONFLICT (shard_key, dataset, shard, node_group) DO UPDATE SET changes = c.changes + excluded.changes;
    FOREACH trig IN ARRAY paused LOOP
        EXECUTE format('ALTER TABLE %%s ENABLE ALWAYS TRIGGER %%I', tbl, trig);
    END LOOP;
END $rekey$
"""


def _rekey_counters(engine: Engine) -> list[int]:
    """Give the change counts written before sql/V0021 a key that hashes into their shard, so
    Citus can split shards; the ids of the counter shards that had such rows. Every row keeps
    its dataset, store shard, node group and count: the guard's marks do not move."""
    with engine.connect() as conn:
        if conn.execute(sa.text("SELECT to_regprocedure('audit.counter_key(bigint)')")).scalar() is None:
            return []
        # Before V0021 the trigger keyed a row by the id of the counter shard it sits in, which
        # does not hash into that shard: those ids are the shards to re-key (the keys written
        # since are small numbers, never a shard id).
        shard_ids = (
            conn.execute(
                sa.text("SELECT shardid FROM pg_dist_shard WHERE logicalrelid = CAST(:t AS regclass)"), {"t": COUNTERS}
            )
            .scalars()
            .all()
        )
        # The keys first, unfiltered: a filter on the distribution column would make Citus read
        # only the shards those values hash into, and a stale row sits elsewhere by definition.
        keys = conn.execute(sa.text(f"SELECT DISTINCT {COUNTER_KEY} FROM {COUNTERS}")).scalars().all()
        shards = sorted(
            conn.execute(
                sa.text(
                    "SELECT k FROM unnest(CAST(:keys AS bigint[])) AS k WHERE k = ANY (CAST(:ids AS bigint[])) "
                    "AND get_shard_id_for_distribution_column(CAST(:t AS regclass), k) <> k"
                ),
                {"t": COUNTERS, "keys": keys, "ids": shard_ids},
            ).scalars()
        )
        if shards:
            # Every shard runs the block; one without such rows returns at once.
            done = conn.execute(
                sa.text("SELECT shardid, success, result FROM run_command_on_shards(CAST(:t AS regclass), :c)"),
                {"t": COUNTERS, "c": _REKEY_SHARD},
            ).all()
            _raise_on_failure("re-key the change counts of", done)
        conn.rollback()
    return shards


def _raise_on_failure(what: str, rows) -> None:
    failed = [f"{r.shardid}: {r.result}" for r in rows if not r.success]
    if failed:
        raise CitusRequired(f"cannot {what} counter shard " + "; ".join(failed))


def _grant_source_reads(engine: Engine, sources: list[str]) -> list[str]:
    """SELECT on each distributed source table for every role that may read the certified entrypoint.

    On one node a view reads its tables with its owner's rights. Citus plans a query over
    the views on the coordinator and sends the workers queries on the shards themselves,
    run as the session's user: a reader of the guarded views was refused ("permission
    denied for table socio_market_snapshots_102009"). The roles granted SELECT on the
    entrypoint (sql/V0008's ml.grant_woe_anchor_roles) therefore get SELECT on the tables
    behind it, which Citus passes on to the shards. They see nothing new: the entrypoint
    shows those columns already. The model's tables and the scores are not granted.
    Only missing grants are made; run ``distribute`` again after granting a new role the entrypoint.
    """
    granted = []
    with engine.begin() as conn:
        grantees = (
            conn.execute(
                sa.text(
                    "SELECT DISTINCT a.grantee::regrole::text FROM pg_class AS c, aclexplode(c.relacl) AS a "
                    "WHERE c.oid = CAST(:d AS regclass) AND a.privilege_type = 'SELECT' AND a.grantee <> 0 "
                    "AND a.grantee <> c.relowner ORDER BY 1"
                ),
                {"d": DATASET},
            )
            .scalars()
            .all()
        )
        for table in sources:
            for role in grantees:
                has = conn.execute(
                    sa.text("SELECT has_table_privilege(CAST(:r AS regrole), CAST(:t AS regclass), 'SELECT')"),
                    {"r": role, "t": table},
                ).scalar_one()
                if not has:
                    conn.execute(sa.text(f"GRANT SELECT ON {table} TO {role}"))
                    granted.append(f"SELECT on {table} to {role}")
    return granted


def layout(engine: Engine) -> list[dict]:
    """Every distributed or reference table with its method, co-location group and shard count."""
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT p.logicalrelid::regclass::text AS table_name, "
                "CASE p.partmethod WHEN 'h' THEN 'distributed' WHEN 'n' THEN 'reference' ELSE p.partmethod::text END "
                "AS kind, p.colocationid, (SELECT count(*) FROM pg_dist_shard AS s "
                "WHERE s.logicalrelid = p.logicalrelid) AS shards FROM pg_dist_partition AS p "
                "JOIN pg_class AS c ON c.oid = p.logicalrelid WHERE NOT c.relispartition ORDER BY 1"
            )
        )
        return [dict(r._mapping) for r in rows]
