"""Scale benchmark: ``python -m bench.scale --snapshots 1000000 10000000 [--quick]`` from the repository root.

For each size, on a fresh embedded PostgreSQL (or ``WOE_BENCH_DATABASE_URL``, emptied
by each load): generate + load as ``woe demo --no-certify`` in a child process (wall
time and the child's own peak RSS, VmHWM), certification after VACUUM ANALYZE, full
scoring and lookup p50 / p99 through the guarded view with the ground-truth model
(``bench.foundation``), ``woe train`` end to end in a child process (wall time, VmHWM),
promotion of that trained model (it re-derives the model from the certified data), and
each page's server-side script time (Streamlit's AppTest, as ``bench.pages`` does: the
first run with cold caches, then the median of the warm runs). Prints one table with a
column per size and the ratio of the largest size to the smallest.

The browser part of ``bench.pages`` is not run here: a browser visit is the page's
server script time plus the frontend's cost, which does not depend on the data
(``bench.pages`` measures both at one size), so the server script time is what shows
how the pages scale. Nothing here is a test and nothing asserts a time.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import sqlalchemy as sa

from woe_core import db, promote

from . import foundation, pages, training
from .common import QUICK_SNAPSHOTS, fresh_engine, listings_for, run_cli, vacuum_and_certify


def measure(snapshots: int, lookups: int, visits: int) -> dict[str, float]:
    """Every figure of one size (seconds, MB, or ms for the lookups)."""
    engine = fresh_engine()
    url = engine.url.render_as_string(hide_password=False)
    out: dict[str, float] = {}
    loaded = run_cli("--database-url", url, "demo", "--listings", str(listings_for(snapshots)), "--no-certify")
    out["generate + load (woe demo), s"] = loaded.wall_s
    out["  peak RSS of woe demo, MB"] = loaded.peak_mb
    cert = vacuum_and_certify(engine)
    if not cert["certified"]:
        raise SystemExit(f"certification failed at {snapshots:,} snapshots")
    out["snapshots"] = cert["certified_rows"]
    out["certify, s"] = cert["certify_s"]

    foundation.insert_ground_truth_model(engine, training.CUTOFF)
    out["full scoring, guarded view, s"] = foundation.scoring_times(engine, peers=False, repeat=1)["guarded_s"]
    p50, p99 = foundation.lookup_latencies(engine, lookups, peers=False)["guarded"]
    out["lookup p50, guarded view, ms"] = p50
    out["lookup p99, guarded view, ms"] = p99

    trained = run_cli(*training.train_args(url))
    out["train end to end (woe train), s"] = trained.wall_s
    out["  peak RSS of woe train, MB"] = trained.peak_mb
    key = trained.stdout.split(":", 1)[0].strip()
    t = time.perf_counter()
    promote.promote(engine, key, "bench", "scale benchmark: provenance re-derived at this size")
    out["promote the trained model, s"] = time.perf_counter() - t

    with engine.connect() as conn:
        listing = conn.execute(sa.text("SELECT min(listing_id) FROM ml.socio_market_snapshots")).scalar_one()
    # The ground-truth model is now the candidate: Compare and Promote show it beside the trained one.
    for name, runs in pages.server_times(url, pages.page_queries(key, foundation.KEY, listing), visits).items():
        out[f"page {name}: first run, s"] = runs[0]
        out[f"page {name}: warm median, s"] = statistics.median(runs[1:])
    db.dispose_engine(engine)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--snapshots", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument("--lookups", type=int, default=1000)
    parser.add_argument("--visits", type=int, default=3, help="warm AppTest runs per page (after one cold run)")
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"{QUICK_SNAPSHOTS:,} and {2 * QUICK_SNAPSHOTS:,} snapshots, 100 lookups, one warm run per page",
    )
    args = parser.parse_args()
    if args.quick:
        args.snapshots, args.lookups, args.visits = [QUICK_SNAPSHOTS, 2 * QUICK_SNAPSHOTS], 100, 1
    sizes = sorted(set(args.snapshots))
    if len(sizes) < 2 or sizes[0] <= 0:
        raise SystemExit("give at least two different positive sizes, e.g. --snapshots 1000000 10000000")

    results = []
    for n in sizes:
        t = time.perf_counter()
        results.append(measure(n, args.lookups, args.visits))
        print(f"{n:,} snapshots measured in {time.perf_counter() - t:.0f} s", file=sys.stderr)

    print(
        f"\nscale benchmark: {os.cpu_count()} cores, embedded PostgreSQL unless WOE_BENCH_DATABASE_URL; "
        f"{args.lookups} lookups, {args.visits} warm page run(s)" + (" (--quick)" if args.quick else "") + "\n"
    )
    heads = [f"{r['snapshots']:,.0f} snapshots" for r in results]
    print(f"| step | {' | '.join(heads)} | {sizes[-1] // sizes[0]}× data: ratio |")
    print("|---|" + "---|" * len(results) + "---|")
    for name in results[0]:
        if name == "snapshots":
            continue
        cells = [f"{r[name]:,.2f}" if r[name] < 100 else f"{r[name]:,.0f}" for r in results]
        ratio = results[-1][name] / results[0][name] if results[0][name] else float("nan")
        print(f"| {name} | {' | '.join(cells)} | {ratio:.2f}× |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
