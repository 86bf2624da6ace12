"""Benchmark of the database foundation: ``python -m bench.foundation [--snapshots N] [--quick]`` from the repository root.

Measures, on a fresh embedded PostgreSQL (or ``WOE_BENCH_DATABASE_URL``):
generate + load of the demo marketplace, certification, full scoring through the
guarded live view, and single-listing lookup latency through the guarded view,
each beside a bare peer run in the same process on the same data. Prints one
table; nothing here is a test and nothing asserts a time.

The scored model is written by hand from the generator's ground truth (its WOE
are ``demo.GROUND_TRUTH`` effects) and made active through the owner's recorded
break-glass, so the scoring figures do not depend on training. Promotion is
measured on a trained model: every promotion, a rollback included, re-derives
the model from the certified data (the provenance check).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import numpy as np
import sqlalchemy as sa

from woe_core import db, demo, promote, train
from woe_core.bands import BAND_NAMES

from .common import QUICK_SNAPSHOTS, fresh_engine, listings_for, load_certified

KEY = "tom_aft_v1_20260101_000000"

GUARDED_LOOKUP = (
    "SELECT woe_logit, woe_anchor_p_slow21, unmapped_bands, dsold_band, trust_tier "
    "FROM ml.woe_anchor_scores_live_train_v WHERE listing_id = %s"
)
BARE_LOOKUP = (
    "SELECT s.*, i.* FROM ml.socio_market_snapshots s LEFT JOIN ml.iphone_image_features i "
    "ON i.listing_id = s.listing_id AND i.t0 = s.t0 WHERE s.listing_id = %s"
)
GUARDED_FULL = "SELECT count(*), avg(woe_anchor_p_slow21) FROM ml.woe_anchor_scores_live_train_v"
UNGUARDED_FULL = "SELECT count(*), avg(woe_anchor_p_slow21) FROM ml.woe_anchor_scores_live_v1"
BARE_FULL = "SELECT count(*), avg(coalesce(photo_quality, 0)) FROM ml.woe_anchor_feature_store_t0_v1_v"


def timed(fn, repeat=1):
    runs = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - t)
    return statistics.median(runs)


def insert_ground_truth_model(engine, cutoff=None):
    """Register the ground-truth model (cutoff ``cutoff``, default now) and make it active by break-glass."""
    gt = demo.GROUND_TRUTH
    base = gt["intercept"]
    with engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM ml.woe_anchor_model_registry_v1"))
        conn.execute(
            sa.text(
                "INSERT INTO ml.woe_anchor_model_registry_v1 (model_key, train_cutoff_ts, half_life_days, eps, n_folds, "
                "band_schema_version, code_sha256, is_active, base_rate, base_logit, dsold_t1, dsold_t2, dsold_t3, "
                "dsold_t4, created_by) VALUES (:k, coalesce(CAST(:cutoff AS timestamptz), now()), 60, 1, 5, 1, :sha, false, 1 / (1 + exp(-:b)), :b, "
                "-0.15, -0.05, 0.05, 0.15, 'bench')"
            ),
            {"k": KEY, "sha": "0" * 64, "b": base, "cutoff": cutoff},
        )
        conn.execute(sa.text("INSERT INTO ml.woe_anchor_cuts_v1 VALUES (:k, NULL, 0.50, 0.62, 0)"), {"k": KEY})
        conn.execute(
            sa.text("INSERT INTO ml.woe_anchor_map_v1 VALUES (:k, NULL, :b, :v, :w, 0, 0, 0, 0)"),
            [{"k": KEY, "b": b, "v": v, "w": w} for b in BAND_NAMES for v, w in gt[b].items()],
        )
        # A hand-written model cannot be promoted (provenance); the benchmark activates it by break-glass.
        conn.execute(
            sa.text(
                "INSERT INTO audit.break_glass_log (model_key, reason) "
                "VALUES (:k, 'benchmark: activate the ground-truth model')"
            ),
            {"k": KEY},
        )
        conn.execute(
            sa.text("UPDATE ml.woe_anchor_model_registry_v1 SET is_active = true WHERE model_key = :k"), {"k": KEY}
        )
        conn.execute(sa.text("ANALYZE"))


def promotion_times(engine) -> tuple[float, float, int]:
    """(promotion of a trained model incl. its provenance check, a rollback (re-derives too), TRAIN rows)."""
    cutoff = train.default_cutoff(*train.data_window(engine)[:2])
    first = train.train(engine, train.TrainParams(cutoff, 60.0), "bench")
    second = train.train(engine, train.TrainParams(cutoff, 120.0), "bench")
    promote.promote(engine, first.model_key, "bench", "benchmark: first trained model")
    t = time.perf_counter()
    promote.promote(engine, second.model_key, "bench", "benchmark: provenance checked")
    checked = time.perf_counter() - t
    t = time.perf_counter()
    promote.rollback(engine, "bench", "benchmark: back to a model verified under this certification")
    verified = time.perf_counter() - t
    return checked, verified, int(second.metrics["counts"]["train_rows"])


def latency(raw, sql, ids):
    samples = []
    for lid in ids:
        t = time.perf_counter()
        raw.execute(sql, (int(lid),), prepare=True).fetchall()
        samples.append((time.perf_counter() - t) * 1000)
    return np.percentile(samples, 50), np.percentile(samples, 99)


def scoring_times(engine, peers: bool = True, repeat: int = 3) -> dict:
    """Full scoring through the guarded view (median of ``repeat`` after a warm-up), and the peers; the lookup plan."""
    with engine.connect() as conn:

        def q(sql):
            return lambda: conn.execute(sa.text(sql)).all()

        q(GUARDED_FULL)()  # warm the cache
        out = {"guarded_s": timed(q(GUARDED_FULL), repeat)}
        if peers:
            out["unguarded_s"] = timed(q(UNGUARDED_FULL), repeat)
            out["bare_s"] = timed(q(BARE_FULL), repeat)
        out["plan"] = "\n".join(conn.execute(sa.text("EXPLAIN " + GUARDED_LOOKUP.replace("%s", "1"))).scalars())
        out["full_plan"] = "\n".join(conn.execute(sa.text("EXPLAIN " + GUARDED_FULL)).scalars())
    return out


def lookup_latencies(engine, lookups: int, peers: bool = True, guarded: str = GUARDED_LOOKUP) -> dict:
    """p50 and p99 (ms) of single-listing lookups through the guarded view (``guarded``), and of the bare join."""
    rng = np.random.default_rng(1)
    with engine.connect() as conn:
        ids = (
            conn.execute(sa.text("SELECT listing_id FROM ml.socio_market_snapshots TABLESAMPLE SYSTEM (5)"))
            .scalars()
            .all()
        )
    ids = rng.choice(np.asarray(ids), size=lookups, replace=True)
    raw = engine.raw_connection()
    out = {}
    try:
        pg = raw.driver_connection
        assert pg is not None, "the engine's pool handed out a closed connection"
        pg.autocommit = True
        warm = ids[: min(50, max(5, len(ids) // 5))]
        latency(pg, guarded, warm)  # warm-up and prepare
        out["guarded"] = latency(pg, guarded, ids)
        if peers:
            latency(pg, BARE_LOOKUP, warm)
            out["bare"] = latency(pg, BARE_LOOKUP, ids)
        pg.autocommit = False  # back to the pool as it came: later engine.begin() blocks need real transactions
    finally:
        raw.close()
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--snapshots", type=int, default=1_000_000)
    parser.add_argument("--lookups", type=int, default=1000)
    parser.add_argument(
        "--quick", action="store_true", help=f"{QUICK_SNAPSHOTS:,} snapshots, 100 lookups, one run each, no peers"
    )
    args = parser.parse_args()
    if args.quick:
        args.snapshots, args.lookups = QUICK_SNAPSHOTS, 100
    peers, repeat = not args.quick, 1 if args.quick else 3

    engine = fresh_engine()
    t = time.perf_counter()
    demo.generate_demo(listings_for(args.snapshots), seed=7)
    t_gen = time.perf_counter() - t
    loaded = load_certified(engine, args.snapshots)
    rows = [
        ("generate (numpy)", t_gen, None, ""),
        ("generate + load (COPY)", loaded["generate_load_s"], 30.0, f"{loaded['socio_rows']:,} snapshots"),
        ("certify (checks + sha256)", loaded["certify_s"], 10.0, "passed" if loaded["certified"] else "FAILED"),
    ]
    insert_ground_truth_model(engine)

    scoring = scoring_times(engine, peers, repeat)
    t_guarded = scoring["guarded_s"]
    if peers:
        t_unguarded, t_bare = scoring["unguarded_s"], scoring["bare_s"]
        note = f"{t_guarded / t_unguarded:.2f}x unguarded view, {t_guarded / t_bare:.1f}x bare entrypoint scan"
        rows.append(("full scoring, guarded view", t_guarded, 5.0, note))
        rows.append(("  peer: unguarded live view", t_unguarded, None, ""))
        rows.append(("  peer: bare entrypoint scan", t_bare, None, "socio LEFT JOIN image, no banding"))
    else:
        rows.append(("full scoring, guarded view", t_guarded, 5.0, "peers skipped (--quick)"))

    lookups = lookup_latencies(engine, args.lookups, peers)
    g50, g99 = lookups["guarded"]
    if peers:
        b50, b99 = lookups["bare"]
        rows.append(("lookup p50, guarded view (ms)", g50 / 1000, 2.0 / 1000, f"{g50 / b50:.1f}x bare indexed join"))
        rows.append(("lookup p99, guarded view (ms)", g99 / 1000, 10.0 / 1000, f"{g99 / b99:.1f}x bare indexed join"))
        rows.append(("  peer: bare join p50 / p99 (ms)", b50 / 1000, None, f"p99 {b99:.2f} ms"))
    else:
        rows.append(("lookup p50, guarded view (ms)", g50 / 1000, 2.0 / 1000, ""))
        rows.append(("lookup p99, guarded view (ms)", g99 / 1000, 10.0 / 1000, ""))
    checked, verified, train_rows = promotion_times(engine)
    rows.append(("promote a trained model", checked, None, f"incl. provenance: {train_rows:,} TRAIN rows re-derived"))
    rows.append(("  roll back", verified, None, "a promotion of the previous model: re-derives it too"))

    print(
        f"\nfoundation benchmark: {loaded['socio_rows']:,} snapshots, {loaded['listings']:,} listings, "
        f"{args.lookups} lookups; PostgreSQL {db.describe(engine).server_version}, {os.cpu_count()} cores"
        + (" (--quick)" if args.quick else "")
        + "\n"
    )
    print(f"| {'step':<34} | {'measured':>10} | {'target':>8} | note")
    print(f"|{'-' * 36}|{'-' * 12}|{'-' * 10}|------")
    for name, value, target, note in rows:
        ms = "(ms)" in name
        fmt = (lambda v: f"{v * 1000:.2f} ms") if ms else (lambda v: f"{v:.2f} s")
        print(f"| {name:<34} | {fmt(value):>10} | {fmt(target) if target else '':>8} | {note}")
    print("\nEXPLAIN of the guarded lookup (listing_id = 1):")
    print("\n".join("    " + line for line in scoring["plan"].splitlines() if "Scan" in line or "Filter" in line))
    print("\nEXPLAIN of full scoring through the guarded view (scans, joins, aggregates, workers, guard):")
    keep = ("Scan", "Join", "Aggregate", "Gather", "Workers", "One-Time Filter", "Nested Loop")
    print("\n".join("    " + line for line in scoring["full_plan"].splitlines() if any(k in line for k in keep)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
