"""Live scores and their explanation, always through the guarded views."""

from __future__ import annotations

from datetime import datetime

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError

from .bands import BANDS
from .db import frame, woe_errors
from .errors import InvalidParameter, NotFound
from .registry import active_model_key

_SCORE_COLUMNS = ", ".join(
    ["model_key", "is_active", "listing_id", "generation", "t0", "base_logit", "presentation_score"]
    + [b[1] for b in BANDS]
    + [b[2] for b in BANDS]
    + ["unmapped_bands", "woe_logit", "woe_anchor_p_slow21"]
)
# The listing is selected with `listing_id = ANY(ARRAY[:id])`, not `listing_id = :id`. On
# Citus the guard and the model's parameters come from coordinator tables, so Citus plans
# those parts first; with an equality, PostgreSQL turns the vision store's outer-join
# condition into a constant filter of its own, Citus then no longer sees the two stores
# joined on listing_id, and it copies the whole vision store to the coordinator for
# every lookup. The array filter keeps the join condition, and the lookup runs on the
# one shard that holds the listing. On one node both forms plan and run alike.
_BY_LISTING = "listing_id = ANY(ARRAY[CAST(:listing_id AS bigint)])"
_LIVE_LOOKUP = sa.text(
    f"SELECT {_SCORE_COLUMNS} FROM ml.woe_anchor_scores_live_train_v "
    f"WHERE {_BY_LISTING} AND (CAST(:t0 AS timestamptz) IS NULL OR t0 = :t0) ORDER BY t0"
)
_MODEL_LOOKUP = sa.text(
    f"SELECT {_SCORE_COLUMNS} FROM ml.woe_anchor_scores_by_model_train_v "
    f"WHERE model_key = :model_key AND {_BY_LISTING} "
    "AND (CAST(:t0 AS timestamptz) IS NULL OR t0 = :t0) ORDER BY t0"
)


def _check_listing_id(listing_id: object) -> int:
    if isinstance(listing_id, bool) or not isinstance(listing_id, int) or listing_id <= 0:
        raise InvalidParameter(f"listing_id must be a positive integer, got {listing_id!r}")
    return listing_id


def lookup(
    engine: Engine, listing_id: int, *, t0: datetime | None = None, model_key: str | None = None
) -> pd.DataFrame:
    """Guarded scores of every snapshot of ``listing_id`` (or only the one at ``t0``).

    Uses the active model unless ``model_key`` names another. Raises
    ``CertificationRequired`` when the guard refuses and ``NotFound`` when no
    model is active or the model does not exist; an unknown listing gives an
    empty frame. One row per snapshot, with each band's value and WOE
    (NaN = unmapped, contributes 0), ``woe_logit`` and ``woe_anchor_p_slow21``.
    """
    listing_id = _check_listing_id(listing_id)
    params = {"listing_id": listing_id, "t0": t0}
    with woe_errors(), engine.connect() as conn:
        if model_key is None:
            rows = frame(conn, _LIVE_LOOKUP, params)
            if rows.empty and _no_active_model(engine):
                raise NotFound("no model is active: train a candidate and promote it first")
            return rows
        exists = conn.execute(
            sa.text("SELECT 1 FROM ml.woe_anchor_model_registry_v1 WHERE model_key = :k"), {"k": model_key}
        ).scalar_one_or_none()
        if exists is None:
            raise NotFound(f"model {model_key!r} does not exist")
        return frame(conn, _MODEL_LOOKUP, {**params, "model_key": model_key})


def _no_active_model(engine: Engine) -> bool:
    """True only when the registry is readable and has no active model (a reader may not read it)."""
    try:
        return active_model_key(engine) is None
    except DBAPIError:
        return False


def contributions(row: pd.Series | dict) -> pd.DataFrame:
    """Per-band explanation of one scored snapshot: value, WOE (0 when unmapped), running logit."""
    row = dict(row)
    running = float(row["base_logit"])
    out = []
    for band_name, band_column, woe_column in BANDS:
        woe = row[woe_column]
        unmapped = woe is None or pd.isna(woe)
        contribution = 0.0 if unmapped else float(woe)
        running += contribution
        out.append(
            {
                "band_name": band_name,
                "band_value": row[band_column],
                "woe": contribution,
                "unmapped": unmapped,
                "logit_after": running,
            }
        )
    return pd.DataFrame(out)
