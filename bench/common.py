"""Shared setup of the benchmarks: a fresh database holding N demo snapshots, certified."""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import sqlalchemy as sa

from woe_core import certify, db, demo, migrations

ROOT = Path(__file__).resolve().parent.parent  # the repository (app.py, the working folder of child processes)

SNAPSHOTS_PER_LISTING = 1.555  # measured ratio of the demo generator (seed 7)


def fresh_engine() -> sa.Engine:
    """``WOE_BENCH_DATABASE_URL`` if set, else a new embedded server in a temporary folder."""
    url = os.environ.get("WOE_BENCH_DATABASE_URL")
    if url:
        engine = db.get_engine(url)
    else:
        engine = db.get_engine(
            db.embedded_url(Path(tempfile.mkdtemp(prefix="woe_bench_")) / "pg", cleanup_mode="delete")
        )
    migrations.migrate(engine)
    return engine


def load_certified(engine: sa.Engine, snapshots: int) -> dict:
    """Generate, load, vacuum, analyze and certify about ``snapshots`` demo snapshots; return counts and timings.

    VACUUM ANALYZE stands in for the autovacuum a freshly loaded table gets anyway,
    so that it does not run in the middle of the measured steps.
    """
    n_listings = max(1, round(snapshots / SNAPSHOTS_PER_LISTING))
    t = time.perf_counter()
    counts = demo.load_demo(engine, n_listings, seed=7)
    t_load = time.perf_counter() - t
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(sa.text("VACUUM ANALYZE"))
    t = time.perf_counter()
    cert = certify.certify(engine, "bench")
    return {
        **counts,
        "listings": n_listings,
        "generate_load_s": t_load,
        "certify_s": time.perf_counter() - t,
        "certified": cert.passed,
    }
