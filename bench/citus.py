"""Single node beside the local Citus cluster: ``python -m bench.citus --snapshots 1000000 [--quick]``.

The same steps on a fresh embedded PostgreSQL and on a fresh database of the local
cluster of ``scripts/citus_cluster.py`` (one coordinator and two workers on this
machine; start it first with ``python scripts/citus_cluster.py start``), migrated and
laid out by ``woe distribute``: generate + load as ``woe demo --no-certify`` (child
process), certification after VACUUM ANALYZE, ``woe train`` end to end (child
process), promotion of that model, full scoring and lookup p50 / p99 through the guarded
view, both with ``listing_id = id`` (only 20 lookups on the cluster, where each copies the
vision store) and with the ``= ANY(ARRAY[id])`` that ``woe_core.score`` uses. On the
cluster it also runs the full scoring once under ``EXPLAIN ANALYZE`` with every task
shown, and reports the shard tasks' own execution times: the per-shard work that a
cluster of real machines would run side by side.

All three nodes share this machine's cores, so the cluster is not expected to be
faster here; the table shows what distribution costs and where the time goes. Nothing
here is a test and nothing asserts a time.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import re
import sys
import time
import uuid
from pathlib import Path

import sqlalchemy as sa

from woe_core import db, distribute, migrations, promote

from . import foundation, training
from .common import QUICK_SNAPSHOTS, ROOT, fresh_engine, listings_for, run_cli, vacuum_and_certify

# The lookup as woe_core.score runs it (see _BY_LISTING there), beside the plain equality.
ARRAY_LOOKUP = foundation.GUARDED_LOOKUP.replace("listing_id = %s", "listing_id = ANY(ARRAY[CAST(%s AS bigint)])")


EQUALITY_LOOKUPS_ON_CLUSTER = 20


def cluster_script():
    """``scripts/citus_cluster.py`` of this checkout, as a module."""
    name = "citus_cluster"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, Path(ROOT) / "scripts" / "citus_cluster.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def shard_task_times(engine: sa.Engine) -> tuple[int, float, float]:
    """Tasks, sum and maximum (ms) of the shard tasks' execution times in one guarded full scoring.

    Run with one connection per worker, so that each worker runs its tasks one after the
    other and a task's time is its own work, not time spent waiting for a core that the
    other tasks hold (with all 32 at once on 2 cores, each task's time is mostly waiting).
    """
    with engine.begin() as conn:
        conn.execute(sa.text("SET LOCAL citus.explain_all_tasks = on"))
        conn.execute(sa.text("SET LOCAL citus.max_adaptive_executor_pool_size = 1"))
        plan = conn.execute(sa.text("EXPLAIN (ANALYZE, TIMING OFF) " + foundation.GUARDED_FULL)).scalars().all()
    # Each task's own plan follows its "->  Task" line and ends with its execution time.
    times, in_task = [], False
    for line in plan:
        if line.strip() == "->  Task":
            in_task = True
        elif in_task and (m := re.match(r"\s+Execution Time: ([0-9.]+) ms", line)):
            times.append(float(m.group(1)))
            in_task = False
    return len(times), sum(times), max(times, default=float("nan"))


def measure(
    engine: sa.Engine,
    snapshots: int,
    lookups: int,
    on_cluster: bool,
    equality_on_cluster: int = EQUALITY_LOOKUPS_ON_CLUSTER,
    out: dict[str, float] | None = None,
) -> dict[str, float]:
    """The steps' figures, added to ``out`` as each step ends (so a failed run keeps those measured)."""
    url = engine.url.render_as_string(hide_password=False)
    out = {} if out is None else out
    loaded = run_cli("--database-url", url, "demo", "--listings", str(listings_for(snapshots)), "--no-certify")
    out["generate + load (woe demo), s"] = loaded.wall_s
    cert = vacuum_and_certify(engine)
    if not cert["certified"]:
        raise SystemExit(f"certification failed at {snapshots:,} snapshots")
    out["snapshots"] = cert["certified_rows"]
    out["certify, s"] = cert["certify_s"]
    trained = run_cli(*training.train_args(url))
    out["train end to end (woe train), s"] = trained.wall_s
    key = trained.stdout.split(":", 1)[0].strip()
    t = time.perf_counter()
    promote.promote(engine, key, "bench", "benchmark: single node beside the cluster")
    out["promote the trained model, s"] = time.perf_counter() - t
    out["full scoring, guarded view, s"] = foundation.scoring_times(engine, peers=False, repeat=1)["guarded_s"]
    # On the cluster the equality copies the vision store per lookup (docs/citus.md): a few suffice there.
    equality_lookups = min(lookups, equality_on_cluster) if on_cluster else lookups
    p50, p99 = foundation.lookup_latencies(engine, equality_lookups, peers=False)["guarded"]
    out["lookup `listing_id = id` p50, guarded view, ms"] = p50
    out["lookup `listing_id = id` p99, guarded view, ms"] = p99
    p50, p99 = foundation.lookup_latencies(engine, lookups, peers=False, guarded=ARRAY_LOOKUP)["guarded"]
    out["lookup `= ANY(ARRAY[id])` p50, guarded view, ms"] = p50
    out["lookup `= ANY(ARRAY[id])` p99, guarded view, ms"] = p99
    if on_cluster:
        tasks, total, longest = shard_task_times(engine)
        out["full scoring, one task at a time per worker: tasks"] = tasks
        out["  sum of the shard tasks' times, s"] = total / 1000
        out["  longest shard task, s"] = longest / 1000
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--snapshots", type=int, default=1_000_000)
    parser.add_argument("--lookups", type=int, default=300)
    parser.add_argument(
        "--equality-lookups",
        type=int,
        default=EQUALITY_LOOKUPS_ON_CLUSTER,
        help="lookups with listing_id = id on the cluster, each copying the vision store (about 3 s at 1M)",
    )
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_SNAPSHOTS:,} snapshots, 50 lookups")
    args = parser.parse_args()
    if args.quick:
        args.snapshots, args.lookups = QUICK_SNAPSHOTS, 50
    cluster = cluster_script()
    if not cluster.is_running():
        raise SystemExit("the local Citus cluster is not running: python scripts/citus_cluster.py start")

    t = time.perf_counter()
    single = fresh_engine()
    one_node = measure(single, args.snapshots, args.lookups, on_cluster=False)
    db.dispose_engine(single)
    print(f"single node measured in {time.perf_counter() - t:.0f} s", file=sys.stderr)

    t = time.perf_counter()
    name = "woe_bench_" + uuid.uuid4().hex[:8]
    engine = db.get_engine(cluster.create_database(name))
    on_cluster: dict[str, float] = {}
    failure = None
    try:
        migrations.migrate(engine)
        distribute.distribute(engine)
        measure(
            engine,
            args.snapshots,
            args.lookups,
            on_cluster=True,
            equality_on_cluster=args.equality_lookups,
            out=on_cluster,
        )
    except Exception as exc:  # the steps measured so far are still printed, then the failure
        failure = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
    finally:
        db.dispose_engine(engine)
        cluster.drop_database(name)
    print(f"cluster measured in {time.perf_counter() - t:.0f} s", file=sys.stderr)

    print(
        f"\nCitus benchmark: {os.cpu_count()} cores shared by all nodes; single node = embedded PostgreSQL, "
        f"cluster = 1 coordinator + 2 workers (32 shards); {args.lookups} lookups"
        + (" (--quick)" if args.quick else "")
        + "\n"
    )
    print(f"| step | single node, {one_node['snapshots']:,.0f} snapshots | cluster | cluster ÷ single |")
    print("|---|---|---|---|")
    steps = [*one_node, *(step for step in on_cluster if step not in one_node)]
    for step in steps:
        if step == "snapshots":
            continue
        mine, value = one_node.get(step), on_cluster.get(step)
        mine_cell, value_cell = ("–" if v is None else f"{v:,.2f}" if v < 100 else f"{v:,.0f}" for v in (mine, value))
        if value is None and failure is not None:
            value_cell = "not measured (failed)"
        ratio = f"{value / mine:.2f}×" if mine and value is not None else "–"
        print(f"| {step} | {mine_cell} | {value_cell} | {ratio} |")
    if failure is not None:
        print(f"\nThe cluster run failed after the steps above: {failure}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
