"""Reading the model registry."""

from __future__ import annotations

import hashlib
import json

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from .db import frame
from .errors import NotFound

_MODEL_COLUMNS = """
    model_key, is_active, created_at, created_by, train_cutoff_ts, half_life_days, eps, n_folds,
    band_schema_version, code_sha256, base_rate, base_logit, dsold_t1, dsold_t2, dsold_t3, dsold_t4,
    (metrics -> 'oof' ->> 'auc')::float8 AS oof_auc, (metrics -> 'eval' ->> 'auc')::float8 AS eval_auc
"""


def active_model_key(engine: Engine) -> str | None:
    """The key of the active model, or None when no model is active."""
    with engine.connect() as conn:
        return conn.execute(
            sa.text("SELECT model_key FROM ml.woe_anchor_model_registry_v1 WHERE is_active")
        ).scalar_one_or_none()


def list_models(engine: Engine) -> pd.DataFrame:
    """Every registered model, newest first."""
    with engine.connect() as conn:
        return frame(conn, sa.text(
            f"SELECT {_MODEL_COLUMNS} FROM ml.woe_anchor_model_registry_v1 ORDER BY created_at DESC, model_key DESC"))


def artifact_digest(engine: Engine, model_key: str) -> str:
    """sha256 of what scores a model: its scoring columns, final cuts and final map, as canonical JSON.

    Two models with the same digest score every snapshot identically; the Promote
    page shows it and passes the digest the reviewer saw to the promotion, so a
    model changed in between is not promoted unseen. Raises NotFound for an unknown key.
    """
    with engine.connect() as conn:
        reg = conn.execute(sa.text(
            "SELECT model_key, band_schema_version, base_logit, dsold_t1, dsold_t2, dsold_t3, dsold_t4 "
            "FROM ml.woe_anchor_model_registry_v1 WHERE model_key = :k"), {"k": model_key}).mappings().one_or_none()
        if reg is None:
            raise NotFound(f"model {model_key!r} does not exist")
        cuts = conn.execute(sa.text(
            "SELECT c1, c2 FROM ml.woe_anchor_cuts_v1 WHERE model_key = :k AND fold_id IS NULL"),
            {"k": model_key}).mappings().all()
        woe = conn.execute(sa.text(
            "SELECT band_name, band_value, woe FROM ml.woe_anchor_map_v1 WHERE model_key = :k AND fold_id IS NULL "
            "ORDER BY band_name, band_value"), {"k": model_key}).all()
    doc = {"registry": {k: (float(v) if isinstance(v, float | int) and not isinstance(v, bool) else v)
                        for k, v in reg.items()},
           "cuts": [{k: float(v) for k, v in c.items()} for c in cuts],
           "map": [[b, v, float(w)] for b, v, w in woe]}
    text = json.dumps(doc, sort_keys=True, separators=(",", ":"), allow_nan=True)
    return hashlib.sha256(text.encode()).hexdigest()
