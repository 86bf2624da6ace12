"""Shared setup of the benchmarks: a fresh database holding N demo snapshots, certified."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa

from woe_core import certify, db, demo, migrations

ROOT = Path(__file__).resolve().parent.parent  # the repository (app.py, the working folder of child processes)

SNAPSHOTS_PER_LISTING = demo.SNAPSHOTS_PER_LISTING  # measured ratio of the demo generator (seed 7)
QUICK_SNAPSHOTS = 20_000  # the size of every benchmark's --quick mode: seconds, to check that it still runs


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


def listings_for(snapshots: int) -> int:
    """Demo listings that give about ``snapshots`` snapshots."""
    return max(1, round(snapshots / SNAPSHOTS_PER_LISTING))


def vacuum_and_certify(engine: sa.Engine) -> dict:
    """VACUUM ANALYZE, then a timed certification: ``certify_s`` and ``certified``.

    VACUUM ANALYZE stands in for the autovacuum a freshly loaded table gets anyway,
    so that it does not run in the middle of the measured steps.
    """
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(sa.text("VACUUM ANALYZE"))
    t = time.perf_counter()
    cert = certify.certify(engine, "bench")
    return {"certify_s": time.perf_counter() - t, "certified": cert.passed, "certified_rows": cert.row_count}


def load_certified(engine: sa.Engine, snapshots: int) -> dict:
    """Generate, load, vacuum, analyze and certify about ``snapshots`` demo snapshots; return counts and timings."""
    n_listings = listings_for(snapshots)
    t = time.perf_counter()
    counts = demo.load_demo(engine, n_listings, seed=7)
    t_load = time.perf_counter() - t
    return {**counts, "listings": n_listings, "generate_load_s": t_load, **vacuum_and_certify(engine)}


# Runs `python -m woe_core ARGS` and, as it exits, writes the process's own peak RSS
# (VmHWM of /proc/self/status) as the last line of stderr.
_MEASURED_CLI = """
import atexit, runpy, sys
from woe_core.demo import proc_kib

atexit.register(lambda: sys.stderr.write(f"\\nwoe-bench-vmhwm-kB {proc_kib('/proc/self/status', 'VmHWM')}\\n"))
sys.argv = ["woe_core", *sys.argv[1:]]
runpy.run_module("woe_core", run_name="__main__")
"""


@dataclass(frozen=True)
class CliRun:
    """One ``python -m woe_core`` child process: wall time, its own peak RSS, its output."""

    wall_s: float
    peak_mb: float
    stdout: str
    stderr: str


def run_cli(*args: str) -> CliRun:
    """Run ``python -m woe_core ARGS`` in a child process; raise SystemExit with its error if it fails.

    The peak RSS is the child's own VmHWM, read by the child as it exits (getrusage's
    ru_maxrss of a parent would also count the copy of the parent it was forked from).
    """
    t = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", _MEASURED_CLI, *args], cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - t
    body, _, last = done.stderr.rstrip().rpartition("\n")
    if done.returncode or not last.startswith("woe-bench-vmhwm-kB "):
        command = args[2:] if args[:1] == ("--database-url",) else args  # never print the URL
        raise SystemExit(f"`woe {' '.join(command)}` failed: {body or last}")
    return CliRun(wall, int(last.split()[1]) / 1024, done.stdout, body)
