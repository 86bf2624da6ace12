"""Reading the model registry."""

from __future__ import annotations

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from .db import frame, woe_errors
from .errors import NotFound

_MODEL_COLUMNS = """
    model_key, is_active, created_at, created_by, train_cutoff_ts, half_life_days, eps, n_folds,
    band_schema_version, code_sha256, created_db_user, base_rate, base_logit, dsold_t1, dsold_t2, dsold_t3, dsold_t4,
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
        return frame(
            conn,
            sa.text(
                f"SELECT {_MODEL_COLUMNS} FROM ml.woe_anchor_model_registry_v1 ORDER BY created_at DESC, model_key DESC"
            ),
        )


def artifact_digest(engine: Engine, model_key: str) -> str:
    """The model's artifact digest (``ml.woe_anchor_artifact_digest_v1``): sha256 over its scoring
    columns, cuts and final map. Equal digests mean equal live scores; promotion can require it."""
    with engine.connect() as conn:
        digest = conn.execute(sa.text("SELECT ml.woe_anchor_artifact_digest_v1(:k)"), {"k": model_key}).scalar_one()
    if digest is None:
        raise NotFound(f"model {model_key!r} does not exist")
    return digest


def verify_provenance(engine: Engine, model_key: str) -> list[str]:
    """Re-derive ``model_key`` from the freshly certified data (``ml.woe_anchor_verify_provenance_v1``)
    and return the differences (empty: the data reproduces the model). Recorded for the promotion
    checklist; promotion itself always re-derives."""
    with woe_errors(), engine.begin() as conn:
        return list(
            conn.execute(sa.text("SELECT ml.woe_anchor_verify_provenance_v1(:k)"), {"k": model_key}).scalar_one()
        )
