"""The product on a real Citus cluster: layout, co-location, certification and the guard.

These tests use the local cluster of ``scripts/citus_cluster.py`` (coordinator + 2
workers on 127.0.0.1) and are skipped, saying how to enable them, when it is not
running. The refusal on plain PostgreSQL needs no cluster and always runs.
"""

from __future__ import annotations

import hashlib
import math
import os
import stat
import tempfile
import uuid
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from conftest import CITUS_TARGET, DEMO_LISTINGS, change_first_listing, citus_cluster
from sqlalchemy.exc import DBAPIError

from woe_core import certify, cli, db, demo, distribute, migrations, promote, score, train
from woe_core.errors import CertificationRequired, CitusRequired

ENABLE = (
    "the local Citus cluster is not running; build and start it with "
    "python scripts/citus_cluster.py start (needs the Citus 14.0.1 source tarball, "
    "WOE_CITUS_TARBALL) to enable these tests"
)
STORES = ("ml.socio_market_snapshots", "ml.iphone_image_features")
SCORES = "ml.woe_anchor_scores_v1"
COUNTERS = distribute.COUNTERS
TRAINING_ROWS = train.TRAINING_ROWS
DATASET = certify.ENTRYPOINT
CITUS_TEMPLATE = "woe_citus_template"


def _cluster_running() -> bool:
    try:
        return citus_cluster().is_running()
    except Exception:
        return False


needs_cluster = pytest.mark.skipif(not _cluster_running(), reason=ENABLE)


@pytest.fixture(scope="module")
def citus_template():
    """A database on every node of the cluster, migrated and distributed (copied per test)."""
    cluster = citus_cluster()
    cluster.drop_database(CITUS_TEMPLATE)
    engine = db.get_engine(cluster.create_database(CITUS_TEMPLATE))
    migrations.migrate(engine)
    first = distribute.distribute(engine)
    db.dispose_engine(engine)
    yield first
    cluster.drop_database(CITUS_TEMPLATE)


@pytest.fixture
def citus_engine(citus_template):
    """A migrated, distributed, empty database of this test's own on the cluster."""
    cluster = citus_cluster()
    name = "woe_c_" + uuid.uuid4().hex[:12]
    engine = db.get_engine(cluster.create_database(name, template=CITUS_TEMPLATE))
    yield engine
    db.dispose_engine(engine)
    cluster.drop_database(name)


@pytest.fixture
def plain_engine(request):
    """A migrated database on a PostgreSQL server without Citus loaded (the embedded one)."""
    if not CITUS_TARGET:
        yield request.getfixturevalue("engine")
        return
    folder = Path(tempfile.mkdtemp(prefix="woe_test_plain_")) / "pg"
    url = db.embedded_url(folder, cleanup_mode="delete")
    admin = sa.create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    name = "woe_p_" + uuid.uuid4().hex[:12]
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    engine = db.get_engine(url.set(database=name))
    migrations.migrate(engine)
    yield engine
    db.dispose_engine(engine)
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def _guard(engine) -> None:
    with engine.connect() as conn, db.woe_errors():
        conn.execute(sa.text("SELECT audit.require_certified_strict(:d, interval '1 day')"), {"d": DATASET})


# Never skipped: the refusal on a server without Citus --------------------------------------------------------


def test_distribute_refuses_on_plain_postgresql(plain_engine, capsys):
    with pytest.raises(CitusRequired, match="distribute needs the Citus extension") as refused:
        distribute.distribute(plain_engine)
    assert "has none" in str(refused.value)
    url = plain_engine.url.render_as_string(hide_password=False)
    assert cli.main(["--database-url", url, "distribute"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: distribute needs the Citus extension") and err.count("\n") == 1
    with plain_engine.connect() as conn:  # nothing was changed
        assert conn.execute(sa.text("SELECT count(*) FROM pg_extension WHERE extname = 'citus'")).scalar_one() == 0
        fk = conn.execute(
            sa.text("SELECT count(*) FROM pg_constraint WHERE conrelid = CAST(:t AS regclass) AND contype = 'f'"),
            {"t": SCORES},
        ).scalar_one()
    assert fk == 1


def test_the_cluster_script_finds_the_tarball_named_by_the_environment(tmp_path, monkeypatch):
    cluster = citus_cluster()
    tarball = tmp_path / "citus-14.0.1.tar.gz"
    tarball.write_bytes(b"not really a tarball")
    monkeypatch.setenv("WOE_CITUS_TARBALL", str(tarball))
    assert cluster.find_tarball() == tarball
    key = cluster.build_key(tarball)  # the sha256 of the tarball and the server version key the cache
    assert key.startswith("citus-" + hashlib.sha256(b"not really a tarball").hexdigest()[:16] + "-18.")
    monkeypatch.setenv("WOE_CITUS_TARBALL", str(tmp_path / "missing.tar.gz"))
    assert cluster.find_tarball() is None
    with pytest.raises(cluster.ClusterError, match="WOE_CITUS_TARBALL"):
        cluster.build(verbose=False)


@pytest.mark.skipif(os.geteuid() != 0, reason="the servers run as another user only when started as root")
def test_the_cluster_script_lets_the_server_user_reach_a_closed_home(tmp_path):
    """A checkout or installation under a folder of mode 700 (root's home on a fresh machine)."""
    closed = tmp_path / "home"
    inner = closed / "checkout" / ".citus"
    inner.mkdir(parents=True)
    for folder in (closed, closed / "checkout"):
        folder.chmod(0o700)
    citus_cluster()._let_server_user_reach(inner)
    for folder in (closed, closed / "checkout"):  # searchable, still not listable
        assert stat.S_IMODE(folder.stat().st_mode) == 0o701, folder


# On the cluster ------------------------------------------------------------------------------------------------


@needs_cluster
def test_the_cluster_has_a_coordinator_and_two_active_workers(citus_engine):
    with citus_engine.connect() as conn:
        assert conn.execute(sa.text("SELECT citus_is_coordinator()")).scalar_one() is True
        workers = conn.execute(sa.text("SELECT node_port FROM citus_get_active_worker_nodes() ORDER BY 1")).all()
    ports = citus_cluster().ports()
    assert [w[0] for w in workers] == [ports["worker1"], ports["worker2"]]


@needs_cluster
def test_distribute_lays_out_stores_co_located_and_scores_by_listing_id(citus_template, citus_engine):
    assert sorted(citus_template.distributed) == sorted([*STORES, COUNTERS, TRAINING_ROWS, SCORES])
    assert citus_template.dropped_foreign_keys == [f"{SCORES}.woe_anchor_scores_v1_model_key_fkey"]
    layout = {row["table_name"]: row for row in distribute.layout(citus_engine)}
    # the governance tables stay local to the coordinator
    assert set(layout) == {*STORES, COUNTERS, TRAINING_ROWS, SCORES}
    assert {row["kind"] for row in layout.values()} == {"distributed"}
    # The stores, their change counters and training's rows share one co-location group; the scores
    # have their own (woe_core.distribute says why).
    stores_group = layout[STORES[0]]["colocationid"]
    assert layout[STORES[1]]["colocationid"] == layout[COUNTERS]["colocationid"] == stores_group
    assert layout[TRAINING_ROWS]["colocationid"] == stores_group
    assert layout[SCORES]["colocationid"] != stores_group
    with citus_engine.connect() as conn:
        columns = conn.execute(
            sa.text(
                "SELECT logicalrelid::regclass::text, column_to_column_name(logicalrelid, partkey) "
                "FROM pg_dist_partition"
            )
        ).all()
        assert {c[1] for c in columns if c[0] != COUNTERS} == {"listing_id"}
        # Shards on both workers; the i-th shard of each store on the same node (co-location), and the
        # scores spread the same way (same shard count and hash ranges).
        placements = conn.execute(
            sa.text(
                "SELECT s.logicalrelid::regclass::text AS t, s.shardminvalue AS lo, p.nodeport "
                "FROM pg_dist_shard AS s JOIN pg_dist_placement AS pl ON pl.shardid = s.shardid "
                "JOIN pg_dist_node AS p ON p.groupid = pl.groupid"
            )
        ).all()
        local_tables = conn.execute(
            sa.text(
                "SELECT count(*) FROM pg_class AS c JOIN pg_namespace AS n ON n.oid = c.relnamespace "
                "WHERE n.nspname IN ('ml', 'audit') AND c.relkind IN ('r', 'p') AND NOT c.relispartition "
                "AND NOT EXISTS (SELECT FROM pg_dist_partition AS d WHERE d.logicalrelid = c.oid)"
            )
        ).scalar_one()
    ports = citus_cluster().ports()
    by_table: dict[str, dict[str, int]] = {}
    for t, lo, port in placements:
        by_table.setdefault(t, {})[lo] = port
    assert {p for p in by_table[SCORES].values()} == {ports["worker1"], ports["worker2"]}
    assert by_table[STORES[0]] == by_table[STORES[1]] == by_table[COUNTERS] == by_table[SCORES]
    assert by_table[TRAINING_ROWS] == by_table[STORES[0]]
    assert local_tables >= 15  # registry, cuts, maps, certifications, promotions, ... on the coordinator


@needs_cluster
def test_every_function_of_the_project_is_a_distributed_object(citus_engine):
    """Citus creates its distributed objects on a node added later: every ml and audit function must be one,
    including those reached only from other functions' SQL bodies (ml.woe_pos_*), which PostgreSQL records
    no dependency on."""
    with citus_engine.connect() as conn:
        missing = (
            conn.execute(
                sa.text(
                    "SELECT p.oid::regprocedure::text FROM pg_proc AS p "
                    "WHERE p.pronamespace IN ('ml'::regnamespace, 'audit'::regnamespace) AND NOT EXISTS "
                    "(SELECT FROM pg_dist_object AS o WHERE o.classid = 'pg_proc'::regclass AND o.objid = p.oid) "
                    "ORDER BY 1"
                )
            )
            .scalars()
            .all()
        )
        pos = conn.execute(
            sa.text("SELECT count(*) FROM pg_proc WHERE pronamespace = 'ml'::regnamespace AND proname LIKE 'woe_pos_%'")
        ).scalar_one()
    assert missing == []
    assert pos == 9


@needs_cluster
def test_distribute_twice_is_a_no_op(citus_engine, capsys):
    before = distribute.layout(citus_engine)
    again = distribute.distribute(citus_engine)
    assert not again.changed
    assert distribute.layout(citus_engine) == before
    url = citus_engine.url.render_as_string(hide_password=False)
    assert cli.main(["--database-url", url, "distribute"]) == 0
    assert "already distributed: nothing to do" in capsys.readouterr().out


@needs_cluster
def test_distribute_turns_a_loaded_database_into_the_layout(citus_template):
    """A database migrated and loaded before distribute keeps its rows and its certification."""
    cluster = citus_cluster()
    name = "woe_c_" + uuid.uuid4().hex[:12]
    engine = db.get_engine(cluster.create_database(name))
    try:
        migrations.migrate(engine)
        demo.load_demo(engine, DEMO_LISTINGS, seed=3)
        before = certify.certify(engine, "before")
        assert before.passed, before.summary()
        result = distribute.distribute(engine)
        assert sorted(result.distributed) == sorted([*STORES, COUNTERS, TRAINING_ROWS, SCORES])
        with engine.connect() as conn:
            rows = conn.execute(sa.text("SELECT count(*) FROM ml.socio_market_snapshots")).scalar_one()
        assert rows == before.row_count
        after = certify.certify(engine, "after")
        assert after.passed, after.summary()
        assert after.dataset_sha256 == before.dataset_sha256
        assert not distribute.distribute(engine).changed
    finally:
        db.dispose_engine(engine)
        cluster.drop_database(name)


@needs_cluster
def test_demo_load_and_certify_on_the_cluster_match_single_node(citus_engine, plain_engine):
    demo.load_demo(citus_engine, DEMO_LISTINGS, seed=3)
    on_cluster = certify.certify(citus_engine, "cluster")
    assert on_cluster.passed, on_cluster.summary()
    demo.load_demo(plain_engine, DEMO_LISTINGS, seed=3)
    single = certify.certify(plain_engine, "single")
    assert single.passed, single.summary()
    assert (on_cluster.row_count, on_cluster.dataset_sha256) == (single.row_count, single.dataset_sha256)
    with citus_engine.connect() as conn:
        rows_per_node = dict(
            conn.execute(
                sa.text(
                    "SELECT p.nodeport, sum(r.result::bigint) FROM run_command_on_shards("
                    "'ml.socio_market_snapshots', 'SELECT count(*) FROM %s') AS r "
                    "JOIN pg_dist_placement AS pl ON pl.shardid = r.shardid "
                    "JOIN pg_dist_node AS p ON p.groupid = pl.groupid GROUP BY 1"
                )
            ).all()
        )
    ports = citus_cluster().ports()
    assert set(rows_per_node) == {ports["worker1"], ports["worker2"]}
    assert all(n > 0 for n in rows_per_node.values()) and sum(rows_per_node.values()) == on_cluster.row_count


@needs_cluster
def test_the_store_join_runs_on_the_shards(citus_engine):
    """The certified entrypoint joins the two co-located stores shard by shard on the workers."""
    demo.load_demo(citus_engine, DEMO_LISTINGS, seed=3)
    with citus_engine.connect() as conn:
        plan = "\n".join(
            r[0]
            for r in conn.execute(sa.text("EXPLAIN SELECT count(*) FROM ml.woe_anchor_feature_store_t0_v1_v")).all()
        )
    assert "Custom Scan (Citus Adaptive)" in plan
    assert "Task Count: 32" in plan
    assert "repartition" not in plan.lower() and "Distributed Subplan" not in plan


@needs_cluster
@pytest.mark.parametrize(
    "change",
    [
        "UPDATE ml.socio_market_snapshots SET ships = NOT ships WHERE listing_id = {lid}",
        "DELETE FROM ml.iphone_image_features WHERE listing_id = {lid}",
        "INSERT INTO ml.socio_market_snapshots SELECT * FROM ml.socio_market_snapshots WHERE listing_id = {lid}",
        "TRUNCATE ml.iphone_image_features",
    ],
)
def test_the_guard_sees_every_change_made_on_a_worker(citus_engine, change):
    demo.load_demo(citus_engine, DEMO_LISTINGS, seed=3)
    assert certify.certify(citus_engine, "t").passed
    _guard(citus_engine)
    with citus_engine.connect() as conn:
        lid = conn.execute(sa.text("SELECT min(listing_id) FROM ml.socio_market_snapshots")).scalar_one()
    with citus_engine.begin() as conn:
        conn.execute(sa.text(change.format(lid=int(lid))))
    # TRUNCATE also fires the shell table's trigger on the coordinator; the others only the workers'.
    seen_by = "its data or definition changed at" if "TRUNCATE" in change else "changed on the nodes holding its"
    with pytest.raises(CertificationRequired, match=seen_by):
        _guard(citus_engine)
    again = certify.certify(citus_engine, "t")  # a new certification covers the change
    if again.passed:
        _guard(citus_engine)
    else:  # e.g. the duplicated snapshot: the new certification fails, and the guard says so
        with pytest.raises(CertificationRequired, match="failed checks"):
            _guard(citus_engine)


@needs_cluster
def test_certification_status_reports_a_write_made_on_a_worker(citus_engine):
    """Home and ``woe status`` read certify.status: after a write only a worker saw, it is not fresh,
    with the guard's own reason, as the guarded views refuse."""
    demo.load_demo(citus_engine, DEMO_LISTINGS, seed=3)
    assert certify.certify(citus_engine, "t").passed
    assert certify.status(citus_engine).fresh
    with citus_engine.begin() as conn:
        change_first_listing(conn)
        changed_at = conn.execute(sa.text("SELECT changed_at FROM audit.dataset_changes")).scalar_one()
    now = certify.status(citus_engine)
    assert now.data_changed_at == changed_at <= now.latest.certified_at  # the coordinator's stamp did not move
    assert not now.fresh and "changed on the nodes holding its shards" in now.reason
    assert certify.certify(citus_engine, "t").passed and certify.status(citus_engine).fresh


@needs_cluster
def test_a_stopped_worker_makes_the_guard_refuse_until_it_returns(citus_engine):
    demo.load_demo(citus_engine, DEMO_LISTINGS, seed=3)
    assert certify.certify(citus_engine, "t").passed
    _guard(citus_engine)
    cluster = citus_cluster()
    cluster.stop_node("worker2")
    try:
        with pytest.raises(CertificationRequired, match="cannot report its changes") as refused:
            _guard(citus_engine)
        assert f"127.0.0.1:{cluster.ports()['worker2']}" in str(refused.value)
    finally:
        cluster.start_node("worker2")
    _guard(citus_engine)


@needs_cluster
def test_a_write_between_certification_and_guard_on_one_shard_is_seen(citus_engine):
    """A single-row change goes to one shard on one worker: only that worker's count moves."""
    demo.load_demo(citus_engine, DEMO_LISTINGS, seed=3)
    assert certify.certify(citus_engine, "t").passed
    with citus_engine.connect() as conn:
        lid, t0 = conn.execute(sa.text("SELECT listing_id, t0 FROM ml.socio_market_snapshots LIMIT 1")).one()
        then = conn.execute(
            sa.text("SELECT marks FROM audit.certification_node_marks ORDER BY certification_id DESC LIMIT 1")
        ).scalar_one()
    with citus_engine.begin() as conn:
        conn.execute(
            sa.text("UPDATE ml.socio_market_snapshots SET ships = NOT ships WHERE listing_id = :l AND t0 = :t"),
            {"l": lid, "t": t0},
        )
    with citus_engine.connect() as conn:
        now = conn.execute(sa.text("SELECT audit.node_change_marks(:d)"), {"d": DATASET}).scalar_one()
    assert set(now) == set(then) and len(now) == 2  # both workers answered, then and now
    moved = [node for node in now if now[node] != then[node]]
    assert len(moved) == 1
    assert int(now[moved[0]]) == int(then[moved[0]]) + 1
    with pytest.raises(CertificationRequired):
        _guard(citus_engine)


@needs_cluster
def test_a_write_is_counted_in_the_co_located_counter_shard_on_the_same_node(citus_engine):
    """The change trigger on a store shard counts in the counter shard with the same hash range, on that node."""
    demo.load_demo(citus_engine, DEMO_LISTINGS, seed=3)
    with citus_engine.connect() as conn:
        lid = conn.execute(sa.text("SELECT min(listing_id) FROM ml.socio_market_snapshots")).scalar_one()
        store_shard = conn.execute(
            sa.text("SELECT get_shard_id_for_distribution_column(:t, CAST(:l AS bigint))"), {"t": STORES[0], "l": lid}
        ).scalar_one()
        before = dict(
            conn.execute(
                sa.text("SELECT shard, changes FROM audit.dataset_shard_counts WHERE dataset = :d"), {"d": DATASET}
            ).all()
        )
    with citus_engine.begin() as conn:
        conn.execute(
            sa.text("UPDATE ml.socio_market_snapshots SET ships = NOT ships WHERE listing_id = CAST(:l AS bigint)"),
            {"l": lid},
        )
    with citus_engine.connect() as conn:
        rows = conn.execute(
            sa.text("SELECT shard_key, shard, node_group, changes FROM audit.dataset_shard_counts WHERE dataset = :d"),
            {"d": DATASET},
        ).all()
        moved = [r for r in rows if r.changes != before.get(r.shard, 0)]
        assert [(r.shard, r.changes) for r in moved] == [
            (f"ml.socio_market_snapshots_{store_shard}", before.get(f"ml.socio_market_snapshots_{store_shard}", 0) + 1)
        ]
        # The row sits in the counter shard with the store shard's hash range, on the same node, and
        # names that node's group.
        same = conn.execute(
            sa.text(
                "SELECT s.shardminvalue = k.shardminvalue, sp.groupid = kp.groupid AND kp.groupid = :g "
                "FROM pg_dist_shard AS s JOIN pg_dist_placement AS sp ON sp.shardid = s.shardid, "
                "pg_dist_shard AS k JOIN pg_dist_placement AS kp ON kp.shardid = k.shardid "
                "WHERE s.shardid = :s AND k.shardid = get_shard_id_for_distribution_column(CAST(:c AS regclass), "
                "CAST(:k AS bigint))"
            ),
            {"s": store_shard, "c": COUNTERS, "k": moved[0].shard_key, "g": moved[0].node_group},
        ).one()
        assert tuple(same) == (True, True)


# Per counter shard (run_command_on_shards fills in %1$s): rows whose key does not hash into it.
_STALE_KEYS = (
    "SELECT count(*) FROM %1$s AS c "
    "WHERE c.shard_key <> audit.counter_key(substring(%1$L from '_([0-9]+)\"?$')::bigint)"
)


def _marks_moved(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    """The nodes whose mark changed, and by how much."""
    return {node: n - before.get(node, 0) for node, n in after.items() if n != before.get(node, 0)}


def _marks(engine) -> dict[str, int]:
    """Every node's total of counted writes to the dataset's shards, as the guard compares them."""
    with engine.connect() as conn:
        marks = conn.execute(sa.text("SELECT audit.node_change_marks(:d)"), {"d": DATASET}).scalar_one()
    return {node: int(n) for node, n in marks.items()}


def _write(engine, lid: int) -> None:
    with engine.begin() as conn:
        conn.execute(
            sa.text("UPDATE ml.socio_market_snapshots SET ships = NOT ships WHERE listing_id = CAST(:l AS bigint)"),
            {"l": lid},
        )


def _store_shard_on(conn: sa.Connection, group: int) -> tuple[int, int]:
    """A listing whose socio store shard is on the worker of Citus group ``group``, and that shard."""
    row = conn.execute(
        sa.text(
            "SELECT s.listing_id, get_shard_id_for_distribution_column(:t, s.listing_id) AS shard "
            "FROM ml.socio_market_snapshots AS s JOIN pg_dist_placement AS p "
            "ON p.shardid = get_shard_id_for_distribution_column(:t, s.listing_id) "
            "WHERE p.groupid = :g ORDER BY s.listing_id LIMIT 1"
        ),
        {"t": STORES[0], "g": group},
    ).one()
    return int(row.listing_id), int(row.shard)


def _groups_of(conn: sa.Connection, shard: int) -> set[int]:
    """The Citus groups holding ``shard`` and every shard co-located with it (the stores, counters, rows, scores)."""
    return set(
        conn.execute(
            sa.text(
                "SELECT DISTINCT p.groupid FROM pg_dist_shard AS s "
                "JOIN pg_dist_shard AS c ON c.shardminvalue = s.shardminvalue "
                "JOIN pg_dist_partition AS dp ON dp.logicalrelid = c.logicalrelid "
                "AND dp.colocationid = (SELECT colocationid FROM pg_dist_partition WHERE logicalrelid = s.logicalrelid) "
                "JOIN pg_dist_placement AS p ON p.shardid = c.shardid WHERE s.shardid = :s"
            ),
            {"s": shard},
        ).scalars()
    )


@needs_cluster
def test_a_shard_moved_to_the_other_worker_keeps_the_verdict_and_its_next_write_is_seen(citus_engine):
    """citus_move_shard_placement takes the counter shard with its stores: the counts travel, so the
    certification still holds after the move, and a write on the new node is counted there."""
    demo.load_demo(citus_engine, DEMO_LISTINGS, seed=3)
    assert certify.certify(citus_engine, "t").passed
    with citus_engine.connect() as conn:
        lid, shard = _store_shard_on(conn, 1)
    ports = citus_cluster().ports()
    with citus_engine.connect() as conn:
        before = conn.execute(sa.text("SELECT count(*) FROM ml.woe_anchor_feature_store_t0_v1_v")).scalar_one()
        # The stores have no primary key, so Citus' logical-replication transfer is refused; block_writes copies.
        conn.execute(
            sa.text(
                "SELECT citus_move_shard_placement(:s, '127.0.0.1', :src, '127.0.0.1', :dst, "
                "shard_transfer_mode => 'block_writes')"
            ),
            {"s": shard, "src": ports["worker1"], "dst": ports["worker2"]},
        )
        conn.commit()
        assert _groups_of(conn, shard) == {2}
    _guard(citus_engine)
    with citus_engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM ml.woe_anchor_feature_store_t0_v1_v")).scalar_one() == before
    marks = _marks(citus_engine)
    _write(citus_engine, lid)
    moved = _marks_moved(marks, _marks(citus_engine))
    assert moved == {f"127.0.0.1:{ports['worker2']}": 1}  # counted by the node holding the shard now
    with pytest.raises(CertificationRequired, match="changed on the nodes holding its shards"):
        _guard(citus_engine)
    assert certify.certify(citus_engine, "t").passed
    _guard(citus_engine)


def _split(conn: sa.Connection, shard: int) -> None:
    """Split ``shard`` (with its co-located shards) in two inside its hash range, a half on each worker."""
    low = int(
        conn.execute(sa.text("SELECT shardminvalue FROM pg_dist_shard WHERE shardid = :s"), {"s": shard}).scalar_one()
    )
    nodes = dict(conn.execute(sa.text("SELECT groupid, nodeid FROM pg_dist_node WHERE groupid > 0")).all())
    conn.execute(
        sa.text(
            "SELECT citus_split_shard_by_split_points(:s, ARRAY[CAST(:p AS text)], ARRAY[:n1, :n2], "
            "shard_transfer_mode => 'block_writes')"
        ),
        {"s": shard, "p": low + 2**24, "n1": nodes[1], "n2": nodes[2]},
    )
    conn.commit()


def _store_shards(conn: sa.Connection) -> int:
    return conn.execute(
        sa.text("SELECT count(*) FROM pg_dist_shard WHERE logicalrelid = CAST(:t AS regclass)"), {"t": STORES[0]}
    ).scalar_one()


@needs_cluster
def test_a_shard_split_keeps_the_verdict_and_a_write_to_a_half_is_seen(citus_engine):
    """Each change count's key hashes into its counter shard (sql/V0021), so Citus can route it to a
    half; the sums by node do not change, and a half's next write is counted in its own counter shard."""
    demo.load_demo(citus_engine, DEMO_LISTINGS, seed=3)
    assert certify.certify(citus_engine, "t").passed
    with citus_engine.connect() as conn:
        lid, shard = _store_shard_on(conn, 1)
        shards = _store_shards(conn)
        rows = conn.execute(sa.text("SELECT count(*) FROM ml.woe_anchor_feature_store_t0_v1_v")).scalar_one()
        _split(conn, shard)
        assert _store_shards(conn) == shards + 1
        assert conn.execute(sa.text("SELECT count(*) FROM ml.woe_anchor_feature_store_t0_v1_v")).scalar_one() == rows
    _guard(citus_engine)
    marks = _marks(citus_engine)
    _write(citus_engine, lid)
    with citus_engine.connect() as conn:
        half = conn.execute(
            sa.text(
                "SELECT n.nodename || ':' || n.nodeport FROM pg_dist_placement AS p JOIN pg_dist_node AS n "
                "USING (groupid) WHERE p.shardid = get_shard_id_for_distribution_column(:t, CAST(:l AS bigint))"
            ),
            {"t": STORES[0], "l": lid},
        ).scalar_one()
        counted = conn.execute(
            sa.text(
                f"SELECT get_shard_id_for_distribution_column(CAST(:c AS regclass), shard_key), "
                "get_shard_id_for_distribution_column(:t, CAST(:l AS bigint)) FROM "
                f"{COUNTERS} WHERE shard = 'ml.socio_market_snapshots_' || "
                "get_shard_id_for_distribution_column(:t, CAST(:l AS bigint))"
            ),
            {"c": COUNTERS, "t": STORES[0], "l": lid},
        ).all()
    moved = _marks_moved(marks, _marks(citus_engine))
    assert moved == {half: 1}
    # One row for the half, in the counter shard of the half's hash range.
    with citus_engine.connect() as conn:
        same_range = conn.execute(
            sa.text(
                "SELECT a.shardminvalue = b.shardminvalue FROM pg_dist_shard AS a, pg_dist_shard AS b "
                "WHERE a.shardid = :k AND b.shardid = :s"
            ),
            {"k": counted[0][0], "s": counted[0][1]},
        ).scalar_one()
    assert len(counted) == 1 and same_range
    with pytest.raises(CertificationRequired, match="changed on the nodes holding its shards"):
        _guard(citus_engine)
    assert certify.certify(citus_engine, "t").passed
    _guard(citus_engine)


@needs_cluster
def test_distribute_re_keys_the_counts_of_a_database_made_before_v0021(tmp_path):
    """Counts written before sql/V0021 were keyed by their counter shard's id, which made a split fail.
    Running distribute again re-keys them on every shard, adding a count made under the new key since,
    without moving the guard's marks; then the shards split, and a third run does nothing."""
    cluster = citus_cluster()
    engine = db.get_engine(cluster.create_database("woe_c_" + uuid.uuid4().hex[:12]))
    try:
        before_v0021 = tmp_path / "sql"
        before_v0021.mkdir()
        for f in sorted(migrations.SQL_DIR.glob("V*.sql")):
            if f.name < "V0021":
                (before_v0021 / f.name).write_bytes(f.read_bytes())
        migrations.migrate(engine, before_v0021)
        distribute.distribute(engine)
        demo.load_demo(engine, DEMO_LISTINGS, seed=3)
        assert certify.certify(engine, "t").passed
        assert [m.version for m in migrations.migrate(engine)] == [21]
        with engine.connect() as conn:
            lid, shard = _store_shard_on(conn, 1)
        # A write counted under the new key beside the shard's old row: the re-key adds them up.
        _write(engine, lid)
        marks = _marks(engine)
        with engine.connect() as conn:
            with pytest.raises(DBAPIError, match="does not fall into any shards"):
                _split(conn, shard)
            conn.rollback()
        again = distribute.distribute(engine)
        assert len(again.rekeyed_counter_shards) == 32 and again.changed
        assert _marks(engine) == marks
        with engine.connect() as conn:
            # On each shard itself: no row whose key hashes elsewhere.
            stale = conn.execute(
                sa.text("SELECT result FROM run_command_on_shards(CAST(:t AS regclass), :c)"),
                {"t": COUNTERS, "c": _STALE_KEYS},
            ).scalars()
            assert set(stale) == {"0"}
        assert certify.certify(engine, "t").passed
        _guard(engine)
        assert not distribute.distribute(engine).changed
        with engine.connect() as conn:
            shards = _store_shards(conn)
            _split(conn, shard)
            assert _store_shards(conn) == shards + 1
        _guard(engine)
    finally:
        db.dispose_engine(engine)
        cluster.drop_database(engine.url.database)


@needs_cluster
@pytest.mark.parametrize("through", ["table", "shard"])
def test_a_write_made_on_a_worker_directly_is_counted(citus_engine, through):
    """A login connected to a worker (Citus hides shards from its queries on pg_class) writing the store,
    or its shard with Citus' guard rail off: the guard sees it."""
    demo.load_demo(citus_engine, DEMO_LISTINGS, seed=3)
    assert certify.certify(citus_engine, "t").passed
    with citus_engine.connect() as conn:
        lid = conn.execute(sa.text("SELECT min(listing_id) FROM ml.socio_market_snapshots")).scalar_one()
        shard, node = conn.execute(
            sa.text(
                "SELECT s.shardid, n.nodeport FROM (SELECT get_shard_id_for_distribution_column(:t, CAST(:l AS bigint)) "
                "AS shardid) AS s JOIN pg_dist_placement AS p ON p.shardid = s.shardid "
                "JOIN pg_dist_node AS n ON n.groupid = p.groupid"
            ),
            {"t": STORES[0], "l": lid},
        ).one()
    worker = sa.create_engine(citus_engine.url.set(port=node), poolclass=sa.pool.NullPool)
    target = STORES[0] if through == "table" else f"{STORES[0]}_{shard}"
    try:
        with worker.begin() as conn:
            if through == "shard":
                conn.execute(sa.text("SET LOCAL citus.enable_manual_changes_to_shards = on"))
            conn.execute(
                sa.text(f"UPDATE {target} SET ships = NOT ships WHERE listing_id = CAST(:l AS bigint)"), {"l": lid}
            )
    finally:
        worker.dispose()
    with pytest.raises(CertificationRequired, match="changed on the nodes holding its shards"):
        _guard(citus_engine)


@needs_cluster
def test_a_transaction_sees_its_own_write_through_the_guard(citus_engine):
    """The guard reads the counters over the transaction's own connections: its own uncommitted write counts."""
    demo.load_demo(citus_engine, DEMO_LISTINGS, seed=3)
    assert certify.certify(citus_engine, "t").passed
    with citus_engine.connect() as conn, conn.begin():
        conn.execute(
            sa.text("UPDATE ml.socio_market_snapshots SET ships = NOT ships WHERE listing_id = ANY(ARRAY[:l])"),
            {"l": conn.execute(sa.text("SELECT min(listing_id) FROM ml.socio_market_snapshots")).scalar_one()},
        )
        with pytest.raises(DBAPIError, match="changed on the nodes holding its shards"):
            conn.execute(sa.text("SELECT audit.require_certified_strict(:d, interval '1 day')"), {"d": DATASET})
    _guard(citus_engine)  # rolled back: nothing changed


@needs_cluster
def test_counters_left_local_on_a_distributed_database_make_the_guard_refuse(citus_engine):
    """Stores distributed, counters not (as after upgrading a database distributed before V0015): the guard
    refuses and writes to the stores are refused, until distribute runs again."""
    demo.load_demo(citus_engine, DEMO_LISTINGS, seed=3)
    assert certify.certify(citus_engine, "t").passed
    with citus_engine.begin() as conn:
        conn.execute(sa.text("SELECT undistribute_table(:t)"), {"t": COUNTERS})
    with pytest.raises(CertificationRequired, match="2 of its distributed tables are not co-located") as refused:
        _guard(citus_engine)
    assert "woe_core distribute" in str(refused.value)
    with pytest.raises(DBAPIError, match="cannot be counted"), citus_engine.begin() as conn:
        change_first_listing(conn)  # a write no counter shard would see is refused
    assert distribute.distribute(citus_engine).distributed == [COUNTERS]
    _guard(citus_engine)  # the counts kept their nodes, and no write got through meanwhile
    with citus_engine.begin() as conn:
        change_first_listing(conn)
    with pytest.raises(CertificationRequired, match="changed on the nodes holding its shards"):
        _guard(citus_engine)


@needs_cluster
def test_a_store_moved_out_of_the_counters_group_is_refused_and_cannot_be_written(citus_engine):
    demo.load_demo(citus_engine, DEMO_LISTINGS, seed=3)
    assert certify.certify(citus_engine, "t").passed
    with citus_engine.begin() as conn:
        conn.execute(
            sa.text("SELECT update_distributed_table_colocation(:t, colocate_with => 'none')"), {"t": STORES[1]}
        )
    with pytest.raises(CertificationRequired, match="1 of its distributed tables are not co-located"):
        _guard(citus_engine)
    with pytest.raises(DBAPIError, match="cannot be counted"), citus_engine.begin() as conn:
        conn.execute(
            sa.text(f"DELETE FROM {STORES[1]} WHERE listing_id = ANY(ARRAY[(SELECT min(listing_id) FROM {STORES[1]})])")
        )


@needs_cluster
@pytest.mark.parametrize(
    "rewind",
    [
        "UPDATE {t} SET changes = changes - 1",
        "UPDATE {t} SET changes = 0",
        "UPDATE {t} SET shard = shard || '_x'",
        "DELETE FROM {t}",
        "TRUNCATE {t}",
        "INSERT INTO {t} (shard_key, dataset, shard, node_group, changes) VALUES (1, 'd', 'x', 0, -5)",
    ],
)
def test_nobody_can_rewind_the_change_counts(citus_engine, rewind):
    """Lowering a count after a write would make the marks match the certification again: refused for the
    owner, through the coordinator and on the worker holding the counter shard alike."""
    demo.load_demo(citus_engine, DEMO_LISTINGS, seed=3)
    with pytest.raises(DBAPIError, match="only counts up|not allowed|check constraint"), citus_engine.begin() as conn:
        conn.execute(sa.text(rewind.format(t=COUNTERS)))
    with citus_engine.connect() as conn:
        shard = conn.execute(
            sa.text(
                f"SELECT min(get_shard_id_for_distribution_column(CAST(:t AS regclass), shard_key)) FROM {COUNTERS}"
            ),
            {"t": COUNTERS},
        ).scalar_one()
        node = conn.execute(
            sa.text(
                "SELECT n.nodeport FROM pg_dist_placement AS p JOIN pg_dist_node AS n USING (groupid) "
                "WHERE p.shardid = :s"
            ),
            {"s": shard},
        ).scalar_one()
    worker = sa.create_engine(
        citus_engine.url.set(port=node), poolclass=sa.pool.NullPool
    )  # the same database on the worker holding it
    try:
        with pytest.raises(DBAPIError, match="only counts up|not allowed|check constraint"), worker.begin() as conn:
            # Citus refuses changes to a shard made directly unless this is on; the triggers refuse them anyway.
            conn.execute(sa.text("SET LOCAL citus.enable_manual_changes_to_shards = on"))
            conn.execute(sa.text(rewind.format(t=f"{COUNTERS}_{shard}")))
    finally:
        worker.dispose()


def test_single_node_guard_records_no_node_marks(plain_engine):
    """On a server without Citus the marks are empty and the guard asks no other node."""
    demo.load_demo(plain_engine, DEMO_LISTINGS, seed=3)
    assert certify.certify(plain_engine, "t").passed
    with plain_engine.connect() as conn:
        marks = conn.execute(sa.text("SELECT marks FROM audit.certification_node_marks")).scalars().all()
        shard_rows = conn.execute(
            sa.text(
                "SELECT (SELECT count(*) FROM audit.dataset_shard_changes) + count(*) FROM audit.dataset_shard_counts"
            )
        ).scalar_one()
    assert marks == [{}] and shard_rows == 0
    _guard(plain_engine)
    with plain_engine.begin() as conn:
        conn.execute(sa.text("UPDATE ml.socio_market_snapshots SET ships = NOT ships WHERE listing_id > 0"))
    with pytest.raises(CertificationRequired, match="changed at"):
        _guard(plain_engine)
    with pytest.raises(DBAPIError, match="written only by"), plain_engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO audit.certification_node_marks VALUES (999, '{}')"))


@needs_cluster
def test_a_certification_with_a_worker_stopped_fails_cleanly_and_the_next_one_passes(citus_engine):
    demo.load_demo(citus_engine, DEMO_LISTINGS, seed=3)
    cluster = citus_cluster()
    cluster.stop_node("worker1")
    try:
        with pytest.raises(DBAPIError) as failed:
            certify.certify(citus_engine, "t")
        assert f"127.0.0.1:{cluster.ports()['worker1']}" in str(failed.value.orig)
        with citus_engine.connect() as conn:  # nothing half-written: no certification, no marks
            assert conn.execute(sa.text("SELECT count(*) FROM audit.dataset_certifications")).scalar_one() == 0
            assert conn.execute(sa.text("SELECT count(*) FROM audit.certification_node_marks")).scalar_one() == 0
    finally:
        cluster.start_node("worker1")
    again = certify.certify(citus_engine, "t")
    assert again.passed, again.summary()
    _guard(citus_engine)


def _trained_and_promoted(engine, params) -> str:
    demo.load_demo(engine, DEMO_LISTINGS, seed=3)
    assert certify.certify(engine, "t").passed
    key = train.train(engine, params, "alice").model_key
    promote.promote(engine, key, "carol", "the first model")
    return key


def _model_artifacts(engine, key: str) -> dict:
    with engine.connect() as conn:
        row = conn.execute(
            sa.text("SELECT base_rate, base_logit FROM ml.woe_anchor_model_registry_v1 WHERE model_key = :k"),
            {"k": key},
        ).one()
        cuts = conn.execute(
            sa.text("SELECT coalesce(fold_id, -1), c1, c2 FROM ml.woe_anchor_cuts_v1 WHERE model_key = :k"), {"k": key}
        ).all()
        woe = conn.execute(
            sa.text(
                "SELECT coalesce(fold_id, -1), band_name, band_value, woe FROM ml.woe_anchor_map_v1 WHERE model_key = :k"
            ),
            {"k": key},
        ).all()
        oof = conn.execute(
            sa.text("SELECT listing_id, t0, is_oof, p_slow21 FROM ml.woe_anchor_scores_v1 WHERE model_key = :k"),
            {"k": key},
        ).all()
        live = conn.execute(
            sa.text(
                "SELECT listing_id, t0, woe_logit, woe_anchor_p_slow21, unmapped_bands "
                "FROM ml.woe_anchor_scores_live_train_v"
            )
        ).all()
    return {
        "base": tuple(row),
        "cuts": {r[0]: (r[1], r[2]) for r in cuts},
        "woe": {tuple(r[:3]): r[3] for r in woe},
        "oof": {(r[0], r[1], r[2]): r[3] for r in oof},
        "live": {(r[0], r[1]): (r[2], r[3], r[4]) for r in live},
    }


def _close(a, b) -> bool:
    if a is None or b is None:
        return a is b
    return abs(a - b) <= 1e-9 * max(1.0, abs(a), abs(b))


@needs_cluster
def test_train_promote_and_live_scores_on_the_cluster_match_single_node(citus_engine, plain_engine):
    params = train.TrainParams(datetime(2026, 8, 1, tzinfo=UTC), 60.0, 1.0, 3)
    cluster = _model_artifacts(citus_engine, _trained_and_promoted(citus_engine, params))
    single = _model_artifacts(plain_engine, _trained_and_promoted(plain_engine, params))
    assert all(_close(a, b) for a, b in zip(cluster["base"], single["base"], strict=True))
    for part in ("cuts", "woe", "oof"):
        assert cluster[part].keys() == single[part].keys() and cluster[part], part
    assert all(_close(a, b) for k in single["cuts"] for a, b in zip(cluster["cuts"][k], single["cuts"][k], strict=True))
    assert all(_close(cluster["woe"][k], single["woe"][k]) for k in single["woe"])
    assert all(_close(cluster["oof"][k], single["oof"][k]) for k in single["oof"])
    assert cluster["live"].keys() == single["live"].keys() and len(single["live"]) > 0
    for k, (logit, p, unmapped) in single["live"].items():
        c_logit, c_p, c_unmapped = cluster["live"][k]
        assert _close(c_logit, logit) and _close(c_p, p) and c_unmapped == unmapped, k
    listing = next(iter(single["live"]))[0]
    on_cluster, on_one_node = score.lookup(citus_engine, listing), score.lookup(plain_engine, listing)
    pd.testing.assert_frame_equal(
        on_cluster.drop(columns="model_key"), on_one_node.drop(columns="model_key"), check_exact=False, rtol=1e-9
    )


@needs_cluster
def test_full_scoring_runs_on_the_shards_and_the_guard_on_the_coordinator(citus_engine):
    """The guard reads coordinator tables, so the coordinator runs it once; every shard scores its own rows."""
    _trained_and_promoted(citus_engine, train.TrainParams(datetime(2026, 8, 1, tzinfo=UTC), 60.0, 1.0, 3))
    with citus_engine.connect() as conn:
        plan = [
            r[0]
            for r in conn.execute(
                sa.text("EXPLAIN SELECT count(*), avg(woe_anchor_p_slow21) FROM ml.woe_anchor_scores_live_train_v")
            ).all()
        ]
    text = "\n".join(plan)
    tasks = next(i for i, line in enumerate(plan) if "Task Count:" in line)
    assert "Task Count: 32" in plan[tasks], text
    guard = [i for i, line in enumerate(plan) if "require_certified_strict" in line]
    assert len(guard) == 1 and guard[0] < tasks, text  # in a subplan the coordinator runs before the tasks
    assert "Distributed Subplan" in plan[guard[0] - 1], text
    assert "One-Time Filter" in "\n".join(plan[tasks:]), text  # each shard query waits for the guard's result


# 40,000 TRAIN snapshots whose features take few values: many rows to a cell of bands.
_FEW_CELLS = (
    """
    INSERT INTO ml.socio_market_snapshots (listing_id, generation, t0, delta_vs_sold_median_30d, seller_trust_tier,
                                           ships, negotiable, item_condition, dmg_ai_prob, battery_health_pct,
                                           sold_at, feature_asof_ts)
    SELECT g, 'iphone_13', timestamptz '2026-03-01' + (g % 60) * interval '1 day', (g % 7 - 3) / 20.0, 'HIGH',
           g % 2 = 0, true, 'good', 0.1, 95::smallint,
           CASE WHEN g % 3 = 0 THEN timestamptz '2026-03-03' + (g % 60) * interval '1 day' END,
           timestamptz '2026-03-01' + (g % 60) * interval '1 day'
      FROM generate_series(1, 40000) AS g
    """,
    """
    INSERT INTO ml.iphone_image_features (listing_id, t0, n_photos, photo_quality, lighting, background_clean,
                                          vision_damage_prob, has_box, has_charger)
    SELECT g, timestamptz '2026-03-01' + (g % 60) * interval '1 day', 6::smallint, (g % 5) / 5.0, 0.5, 0.5, 0.1,
           true, g % 4 = 0
      FROM generate_series(1, 40000) AS g
    """,
)
_DERIVE = "SELECT * FROM ml.woe_anchor_derive_v1('2026-08-01', 60, 1, -0.15, -0.05, 0.05, 0.15) ORDER BY 1, 2, 3"


@needs_cluster
def test_promotion_re_derives_the_model_from_sums_made_on_the_shards(citus_engine, plain_engine):
    """The derive's row-level sums run per shard; only cells of bands reach the coordinator.

    Under a 256 kB limit on intermediate results, gathering the 40,000 TRAIN rows (V0013's
    form, which failed at 10M snapshots) is refused by Citus; the cells pass, and the
    derived model equals the single node's.
    """
    derived = {}
    for name, engine in (("cluster", citus_engine), ("single", plain_engine)):
        with engine.begin() as conn:
            for statement in _FEW_CELLS:
                conn.execute(sa.text(statement))
            if name == "cluster":
                conn.execute(sa.text("SET LOCAL citus.max_intermediate_result_size = '256kB'"))
            derived[name] = conn.execute(sa.text(_DERIVE)).all()
    assert len(derived["cluster"]) == len(derived["single"])
    assert next(r.n_pos for r in derived["single"] if r.item == "c1") == 40000  # every row TRAIN and labelled
    assert len({r.band_name for r in derived["single"] if r.item == "map"}) == 10
    for c, s in zip(derived["cluster"], derived["single"], strict=True):
        key = ("item", "band_name", "band_value", "n_pos", "n_neg")
        assert [getattr(c, k) for k in key] == [getattr(s, k) for k in key]
        assert _close(c.value, s.value) and _close(c.w_pos, s.w_pos) and _close(c.w_neg, s.w_neg), c


@needs_cluster
def test_the_derives_percentiles_are_counted_on_the_shards(citus_engine):
    """``ml.woe_percentile_cont`` (the derive's cuts on Citus) over a distributed table equals
    ``percentile_cont``, with its grouped counts run per shard and no intermediate result."""
    rng = np.random.default_rng(3)
    # one first digit, split by the next ones; neighbours a few ulps apart, which 15 significant
    # digits (extra_float_digits = 0, below) cannot tell apart
    crowded = 1.0 + rng.integers(0, 2**20, 80_000) * 2.0**-52
    values = [*crowded, *rng.normal(size=20_000), math.inf, -math.inf, math.nan, -0.0, 0.0, None]
    with citus_engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE public.scores (listing_id bigint, v float8)"))
        conn.execute(sa.text("SELECT create_distributed_table('public.scores', 'listing_id')"))
    with citus_engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO public.scores SELECT g, v FROM unnest(CAST(:v AS float8[])) WITH ORDINALITY AS u(v, g)"
            ),
            {"v": values},
        )
    fractions = [0.0, 1 / 3, 0.5, 2 / 3, 1.0]
    with citus_engine.begin() as conn:
        conn.execute(sa.text("SET LOCAL citus.max_intermediate_result_size = '16kB'"))
        # Citus sends the ranges' bounds to the shards as text: the function must not round them
        conn.execute(sa.text("SET LOCAL extra_float_digits = 0"))
        got = conn.execute(
            sa.text("SELECT * FROM ml.woe_percentile_cont('SELECT v FROM public.scores', CAST(:f AS float8[]))"),
            {"f": fractions},
        ).one()
        want = conn.execute(
            sa.text(
                "SELECT percentile_cont(CAST(:f AS float8[])) WITHIN GROUP (ORDER BY v), count(v) FROM public.scores"
            ),
            {"f": fractions},
        ).one()
        plan = "\n".join(
            conn.execute(
                sa.text(
                    "EXPLAIN SELECT 1 AS r, CASE WHEN v < 0 THEN 65535 - get_byte(float8send(v), 0) ELSE 0 END AS d, "
                    "count(*), min(v), max(v) FROM public.scores GROUP BY 1, 2 ORDER BY 1, 2"
                )
            ).scalars()
        )
    assert got.n == want.count == len(values) - 1
    for g, w in zip(got.percentiles, want[0], strict=True):
        assert (math.isnan(g) and math.isnan(w)) or g == w, (got.percentiles, want[0])
    assert "Task Count: 32" in plan and "HashAggregate" in plan.split("Task Count")[1], plan


def _limited(engine, limit: str):
    """An engine like ``engine`` whose sessions refuse any intermediate result above ``limit``."""
    return sa.create_engine(engine.url, connect_args={"options": f"-c citus.max_intermediate_result_size={limit}"})


@needs_cluster
def test_trainings_row_level_work_runs_on_the_shards(citus_engine, plain_engine):
    """Training's rows are made, counted, ranked, summed and scored shard by shard.

    40,000 snapshots of few feature values: gathering their training rows (tens of bytes
    each) on the coordinator would take megabytes, and Citus refuses any intermediate
    result above 256 kB here; the cells of bands, bucket counts and distinct scores that
    do travel fit. The model equals the single node's, and the rows are gone afterwards.
    """
    params = train.TrainParams(datetime(2026, 4, 10, tzinfo=UTC), 30.0, 1.0, 4)
    artifacts = {}
    for name, engine in (("cluster", citus_engine), ("single", plain_engine)):
        with engine.begin() as conn:
            for statement in _FEW_CELLS:
                conn.execute(sa.text(statement))
        assert certify.certify(engine, "ops").passed
        limited = _limited(engine, "256kB") if name == "cluster" else engine
        try:
            key = train.train(limited, params, "alice").model_key
        finally:
            if limited is not engine:
                limited.dispose()
        with engine.connect() as conn:
            assert conn.execute(sa.text(f"SELECT count(*) FROM {TRAINING_ROWS}")).scalar_one() == 0
            n_oof = conn.execute(
                sa.text("SELECT count(*) FROM ml.woe_anchor_scores_v1 WHERE model_key = :k"), {"k": key}
            ).scalar_one()
        assert n_oof > 15_000
        artifacts[name] = _model_artifacts(engine, key)
    cluster, single = artifacts["cluster"], artifacts["single"]
    assert all(_close(a, b) for a, b in zip(cluster["base"], single["base"], strict=True))
    for part in ("cuts", "woe", "oof"):
        assert cluster[part].keys() == single[part].keys() and cluster[part], part
        for k, v in single[part].items():
            got = cluster[part][k]
            assert all(_close(a, b) for a, b in zip(got, v, strict=True)) if isinstance(v, tuple) else _close(got, v)
    with citus_engine.connect() as conn:  # the rows are inserted shard by shard from the shard's own join
        plan = "\n".join(
            r[0]
            for r in conn.execute(
                sa.text("EXPLAIN (COSTS OFF) " + train._BUILD_ROWS),
                {"k": 4, "cutoff": params.train_cutoff_ts, "data_end": params.train_cutoff_ts, "h": 30.0}
                | dict(zip(("t1", "t2", "t3", "t4"), params.dsold_thresholds, strict=True)),
            )
        )
    assert "Task Count: 32" in plan and "Insert on woe_anchor_training_rows_v1_" in plan, plan
    assert " Join" in plan and "Distributed Subplan" not in plan, plan
    with citus_engine.connect() as conn:  # gathering the rows themselves is refused under that limit
        conn.execute(sa.text("SET citus.max_intermediate_result_size = '256kB'"))
        with pytest.raises(DBAPIError, match="max_intermediate_result_size"):
            conn.execute(
                sa.text(
                    "WITH r AS MATERIALIZED (SELECT listing_id, t0 FROM ml.v_woe_anchor_band_inputs_v1) "
                    "SELECT count(*) FROM r"
                )
            ).scalar_one()


@needs_cluster
def test_the_guarded_view_refuses_after_a_change_on_a_worker(citus_engine):
    _trained_and_promoted(citus_engine, train.TrainParams(datetime(2026, 8, 1, tzinfo=UTC), 60.0, 1.0, 3))
    query = sa.text("SELECT woe_anchor_p_slow21 FROM ml.woe_anchor_scores_live_train_v WHERE listing_id = :l")
    with citus_engine.connect() as conn:
        lid = int(conn.execute(sa.text("SELECT min(listing_id) FROM ml.socio_market_snapshots")).scalar_one())
        assert conn.execute(query, {"l": lid}).all()
    with citus_engine.begin() as conn:
        conn.execute(
            sa.text("UPDATE ml.socio_market_snapshots SET ships = NOT ships WHERE listing_id = :l"), {"l": lid}
        )
    for sql in (query, sa.text("SELECT count(*) FROM ml.woe_anchor_scores_live_train_v")):
        refused = pytest.raises(CertificationRequired, match="changed on the nodes holding its")
        with refused, citus_engine.connect() as conn, db.woe_errors():
            conn.execute(sql, {"l": lid}).all()


@needs_cluster
def test_a_training_that_loses_a_worker_fails_cleanly_and_the_next_one_succeeds(citus_engine):
    demo.load_demo(citus_engine, DEMO_LISTINGS, seed=3)
    assert certify.certify(citus_engine, "t").passed
    cluster = citus_cluster()
    params = train.TrainParams(datetime(2026, 8, 1, tzinfo=UTC), 60.0, 1.0, 3)

    def stop_a_worker_mid_run(step: str, _fraction: float) -> None:
        if step == "learn presentation cuts":  # the rows are banded; scores and artifacts are not written yet
            cluster.stop_node("worker1")

    try:
        with pytest.raises(DBAPIError) as failed:
            train.train(citus_engine, params, "alice", progress=stop_a_worker_mid_run)
        assert f"127.0.0.1:{cluster.ports()['worker1']}" in str(failed.value.orig)
    finally:
        cluster.start_node("worker1")
    with citus_engine.connect() as conn:  # nothing half-written: no model, no artifacts, no score partition
        for table in (
            "ml.woe_anchor_model_registry_v1",
            "ml.woe_anchor_cuts_v1",
            "ml.woe_anchor_map_v1",
            TRAINING_ROWS,
        ):
            assert conn.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar_one() == 0, table
        assert conn.execute(sa.text("SELECT count(*) FROM ml.woe_anchor_scores_v1")).scalar_one() == 0
        assert (
            conn.execute(
                sa.text("SELECT count(*) FROM pg_inherits WHERE inhparent = 'ml.woe_anchor_scores_v1'::regclass")
            ).scalar_one()
            == 0
        )
    key = train.train(citus_engine, params, "alice").model_key
    promote.promote(citus_engine, key, "carol", "trained once the worker was back")
    with citus_engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM ml.woe_anchor_scores_live_train_v")).scalar_one() > 0


@needs_cluster
def test_a_lookup_runs_on_the_one_shard_of_its_listing(citus_engine):
    """The lookup's filter keeps the stores' join visible to Citus: no store is copied to the coordinator."""
    _trained_and_promoted(citus_engine, train.TrainParams(datetime(2026, 8, 1, tzinfo=UTC), 60.0, 1.0, 3))
    with citus_engine.connect() as conn:
        lid = int(conn.execute(sa.text("SELECT min(listing_id) FROM ml.socio_market_snapshots")).scalar_one())
        compiled = score._LIVE_LOOKUP.bindparams(listing_id=lid, t0=None).compile(
            dialect=conn.dialect, compile_kwargs={"literal_binds": True}
        )
        plan = "\n".join(conn.execute(sa.text(f"EXPLAIN {compiled}")).scalars())
        # the plain equality is what this avoids: it copies the vision store from every shard
        equality = "\n".join(
            conn.execute(
                sa.text(f"EXPLAIN SELECT * FROM ml.woe_anchor_scores_live_train_v WHERE listing_id = {lid}")
            ).scalars()
        )
    assert "Task Count: 1" in plan and "Task Count: 32" not in plan, plan
    assert "Task Count: 32" in equality, equality
    assert len(score.lookup(citus_engine, lid)) >= 1
