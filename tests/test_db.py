import re
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa
from conftest import leak_asof

from woe_core import db, demo
from woe_core.errors import DatabaseConfigError, DatabaseUnavailable, InvalidParameter

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(
    ("url", "driver"),
    [
        ("postgresql://u:p@h:5433/d", "postgresql+psycopg"),
        ("postgres://u@h/d", "postgresql+psycopg"),
        ("postgresql+psycopg://u@h/d", "postgresql+psycopg"),
    ],
)
def test_accepted_urls_use_psycopg(url, driver):
    assert db.normalize_url(url).drivername == driver


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("mysql://u:secret@h/d", "unsupported database URL scheme 'mysql'"),
        ("postgresql+asyncpg://u@h/d", "unsupported database URL scheme 'postgresql+asyncpg'"),
        ("sqlite:///x.db", "unsupported database URL scheme 'sqlite'"),
        ("localhost:5432", "unsupported database URL scheme ''"),
        ("", "database URL must be a non-empty string, got ''"),
    ],
)
def test_bad_urls_are_refused_without_leaking_passwords(url, message):
    with pytest.raises(DatabaseConfigError, match=re.escape(message)) as info:
        db.normalize_url(url)
    assert "secret" not in str(info.value)


def test_unreachable_server_is_named():
    with pytest.raises(
        DatabaseUnavailable, match=r"cannot connect to PostgreSQL at 'postgresql\+psycopg://u:\*\*\*@127.0.0.1:1/d'"
    ):
        db.get_engine("postgresql://u:hunter2@127.0.0.1:1/d")


def test_one_engine_per_url(engine):
    url = engine.url.render_as_string(hide_password=False)
    assert db.get_engine(url) is engine


def test_describe_reports_kind_and_version_and_masks_passwords(engine):
    info = db.describe(engine)
    assert info.kind == "server" and info.server_version.split(".")[0].isdigit()
    assert db.mask_url("postgresql://u:hunter2@h:5/d") == "postgresql://u:***@h:5/d"


@pytest.mark.parametrize(
    ("n", "message"), [(0, "got 0"), (-3, "got -3"), (2.5, "got 2.5"), (True, "got True"), ("10", "got '10'")]
)
def test_demo_size_must_be_positive(engine, n, message):
    with pytest.raises(InvalidParameter, match=f"n_listings must be a positive integer, {message}"):
        demo.load_demo(engine, n)
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM ml.socio_market_snapshots")).scalar_one() == 0


def test_demo_is_deterministic_and_t0_safe():
    a, b = demo.generate_demo(300, seed=11), demo.generate_demo(300, seed=11)
    assert a.socio.equals(b.socio) and a.images.equals(b.images)
    assert not demo.generate_demo(300, seed=12).socio.equals(a.socio)
    s = a.socio
    assert (s["feature_asof_ts"] <= s["t0"]).all()
    assert not s.duplicated(["listing_id", "t0"]).any()
    assert s["listing_id"].nunique() == 300 and len(s) > 300  # some listings are edited
    sold = s.dropna(subset=["sold_at"])
    assert (sold["sold_at"] >= sold["t0"]).all()


def test_demo_chunks_are_the_same_rows_in_publication_order(monkeypatch):
    monkeypatch.setattr(demo, "CHUNK_LISTINGS", 70)  # 300 listings in 5 chunks, the last one short
    chunks = list(demo.iter_demo(300, seed=5))
    assert [c.socio["listing_id"].nunique() for c in chunks] == [70, 70, 70, 70, 20]
    whole = demo.generate_demo(300, seed=5)
    assert whole.socio.equals(pd.concat([c.socio for c in chunks], ignore_index=True))
    first_t0 = whole.socio.groupby("listing_id")["t0"].min()
    assert first_t0.index.is_monotonic_increasing and first_t0.is_monotonic_increasing  # ids follow publication
    assert list(first_t0.index) == list(range(10_000_000, 10_000_300))
    with pytest.raises(InvalidParameter, match="seed must be a non-negative integer, got -1"):
        demo.generate_demo(10, seed=-1)


def test_demo_load_replaces_previous_data(engine):
    first = demo.load_demo(engine, 50, seed=1)
    second = demo.load_demo(engine, 70, seed=2)
    with engine.connect() as conn:
        listings = conn.execute(
            sa.text("SELECT count(DISTINCT listing_id) FROM ml.socio_market_snapshots")
        ).scalar_one()
        rows = conn.execute(sa.text("SELECT count(*) FROM ml.socio_market_snapshots")).scalar_one()
    assert listings == 70 and rows == second["socio_rows"] and first["socio_rows"] > 0


def _cli(*args, url=None):
    cmd = [sys.executable, "-m", "woe_core"] + (["--database-url", url] if url else []) + list(args)
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_cli_init_certify_status_and_score(engine):
    url = engine.url.render_as_string(hide_password=False)
    out = _cli("init-db", url=url)
    assert out.returncode == 0 and "database is up to date" in out.stdout
    out = _cli("demo", "--listings", "200", "--actor", "ci", url=url)
    assert out.returncode == 0, out.stderr
    assert "certified #1" in out.stdout and "t0_safe" in out.stdout
    out = _cli("status", url=url)
    assert "certification: fresh" in out.stdout and "active model: none" in out.stdout
    out = _cli("score", "1", url=url)
    assert (
        out.returncode == 1
        and out.stderr.strip() == "error: no model is active: train a candidate and promote it first"
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["demo", "--listings", "0"], "error: n_listings must be a positive integer, got 0"),
        (["certify", "--dataset", "ml.other"], "error: unknown dataset 'ml.other'"),
        (["certify", "--actor", " "], "error: actor must be a non-empty name"),
    ],
)
def test_cli_bad_input_is_one_line_and_exit_1(engine, args, message):
    out = _cli(*args, url=engine.url.render_as_string(hide_password=False))
    assert out.returncode == 1 and out.stderr.startswith(message) and "Traceback" not in out.stderr


def test_cli_unknown_scheme_is_reported():
    out = _cli("status", url="mysql://x@y/z")
    assert out.returncode == 1 and "unsupported database URL scheme 'mysql'" in out.stderr


def test_cli_failed_certification_exits_1(demo_engine):
    with demo_engine.begin() as conn:
        leak_asof(conn, "listing_id = (SELECT min(listing_id) FROM ml.socio_market_snapshots)", timedelta(days=1))
    out = _cli("certify", url=demo_engine.url.render_as_string(hide_password=False))
    assert out.returncode == 1 and "FAILED: t0_safe" in out.stdout


def test_cli_on_an_unmigrated_database_says_how_to_fix_it(empty_engine):
    out = _cli("status", url=empty_engine.url.render_as_string(hide_password=False))
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert out.stderr.startswith("error: database:") and "python -m woe_core init-db" in out.stderr
