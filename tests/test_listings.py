"""Finding existing listings: woe_core.listings and ``python -m woe_core listings``."""

import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa

from woe_core import listings
from woe_core.errors import InvalidParameter

ROOT = Path(__file__).resolve().parent.parent


def _all_ids(engine) -> list[int]:
    with engine.connect() as conn:
        return [
            int(x)
            for x in conn.execute(
                sa.text("SELECT DISTINCT listing_id FROM ml.socio_market_snapshots ORDER BY 1")
            ).scalars()
        ]


def test_newest_from_id_and_random_return_existing_listings(demo_engine):
    ids = _all_ids(demo_engine)
    newest = listings.newest(demo_engine, 5)
    assert list(newest["listing_id"]) == ids[::-1][:5]
    assert (newest["snapshots"] >= 1).all() and newest["latest_t0"].notna().all()
    start = ids[10] - 1
    assert list(listings.from_id(demo_engine, start, 3)["listing_id"]) == [i for i in ids if i >= start][:3]
    assert {listings.random_listing(demo_engine) for _ in range(5)} <= set(ids)
    with pytest.raises(InvalidParameter, match="from 1 to 100, got 0"):
        listings.newest(demo_engine, 0)
    with pytest.raises(InvalidParameter, match="got -1"):
        listings.from_id(demo_engine, -1)


def test_empty_store_has_no_random_listing(engine):
    assert listings.random_listing(engine) is None and listings.newest(engine).empty


def test_cli_lists_listings(demo_engine):
    url = demo_engine.url.render_as_string(hide_password=False)
    out = subprocess.run(
        [sys.executable, "-m", "woe_core", "--database-url", url, "listings", "--recent", "3"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert str(_all_ids(demo_engine)[-1]) in out.stdout and "snapshots" in out.stdout
    out = subprocess.run(
        [sys.executable, "-m", "woe_core", "--database-url", url, "listings", "--random"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0 and int(out.stdout) in _all_ids(demo_engine)
