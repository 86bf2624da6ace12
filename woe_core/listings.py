"""Finding listings to look up: the latest ids, ids from a number on, a random one.

Every query walks the ``(listing_id, t0)`` index of the socio-market store and is
bounded by a LIMIT, so it costs the same on 20,000 or 10 million snapshots.
"""

from __future__ import annotations

import random

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from .contract import SOCIO_STORE
from .db import frame
from .errors import InvalidParameter

MAX_LISTINGS = 100
_COLUMNS = ["listing_id", "snapshots", "generation", "latest_t0"]


def _limit(n: object) -> int:
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_LISTINGS:
        raise InvalidParameter(f"the number of listings must be an integer from 1 to {MAX_LISTINGS}, got {n!r}")
    return n


def _describe(conn, ids_sql: str, params: dict) -> pd.DataFrame:
    """listing_id, number of snapshots, generation and latest t0 of the listings chosen by ``ids_sql``."""
    return frame(
        conn,
        sa.text(
            f"SELECT i.listing_id, count(*) AS snapshots, max(s.generation) AS generation, max(s.t0) AS latest_t0 "
            f"FROM ({ids_sql}) AS i JOIN {SOCIO_STORE} AS s ON s.listing_id = i.listing_id "
            "GROUP BY i.listing_id ORDER BY i.listing_id DESC"
        ),
        params,
    )


def newest(engine: Engine, n: int = 10) -> pd.DataFrame:
    """The ``n`` highest listing ids (the demo numbers listings from 10,000,000 in order of creation)."""
    with engine.connect() as conn:
        return _describe(
            conn,
            f"SELECT DISTINCT listing_id FROM (SELECT listing_id FROM {SOCIO_STORE} "
            "ORDER BY listing_id DESC LIMIT :n * 20) AS x ORDER BY listing_id DESC LIMIT :n",
            {"n": _limit(n)},
        )


def from_id(engine: Engine, start: int, n: int = 10) -> pd.DataFrame:
    """The first ``n`` listing ids at or above ``start`` (to find one near a number)."""
    if isinstance(start, bool) or not isinstance(start, int) or start < 0:
        raise InvalidParameter(f"start must be a non-negative integer listing id, got {start!r}")
    with engine.connect() as conn:
        rows = _describe(
            conn,
            f"SELECT DISTINCT listing_id FROM (SELECT listing_id FROM {SOCIO_STORE} "
            "WHERE listing_id >= :s ORDER BY listing_id LIMIT :n * 20) AS x "
            "ORDER BY listing_id LIMIT :n",
            {"s": start, "n": _limit(n)},
        )
    return rows.sort_values("listing_id").reset_index(drop=True)


def random_listing(engine: Engine) -> int | None:
    """A random existing listing id (the first id at or above a uniform draw between the smallest and
    the largest), or None when the store is empty.

    Two bounded queries rather than one with a correlated subquery, which Citus cannot plan
    over a distributed store ("correlated subqueries are not supported when the FROM clause
    contains a CTE or subquery").
    """
    with engine.connect() as conn:
        lo, hi = conn.execute(sa.text(f"SELECT min(listing_id), max(listing_id) FROM {SOCIO_STORE}")).one()
        if lo is None:
            return None
        draw = random.randint(int(lo), int(hi))
        return conn.execute(
            sa.text(f"SELECT listing_id FROM {SOCIO_STORE} WHERE listing_id >= :d ORDER BY listing_id LIMIT 1"),
            {"d": draw},
        ).scalar_one()
