"""What the Home page and ``status`` show: database, data, certification, models."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from . import certify, db, registry


@dataclass(frozen=True)
class DataCounts:
    """Row counts of the feature stores (full scans: callers may cache them briefly)."""

    snapshots: int
    image_rows: int
    listings: int
    counted_at: datetime


@dataclass(frozen=True)
class Overview:
    database: db.DatabaseInfo
    counts: DataCounts
    certification: certify.CertificationStatus
    active_model: str | None
    models: int


def data_counts(engine: Engine) -> DataCounts:
    """Snapshots, image rows and distinct listings of the feature stores."""
    with engine.connect() as conn:
        c = conn.execute(
            sa.text(
                "SELECT (SELECT count(*) FROM ml.socio_market_feature_store_train_v) AS snapshots, "
                "(SELECT count(*) FROM ml.iphone_image_features_unified_v1_train_v) AS image_rows, "
                "(SELECT count(DISTINCT listing_id) FROM ml.socio_market_feature_store_train_v) AS listings"
            )
        ).one()
    return DataCounts(c.snapshots, c.image_rows, c.listings, datetime.now(UTC))


def overview(engine: Engine, counts: DataCounts | None = None) -> Overview:
    """Everything the landing page shows; ``counts`` may come from a cache (the rest is always live)."""
    with engine.connect() as conn:
        models = conn.execute(sa.text("SELECT count(*) FROM ml.woe_anchor_model_registry_v1")).scalar_one()
    return Overview(
        database=db.describe(engine),
        counts=counts or data_counts(engine),
        certification=certify.status(engine),
        active_model=registry.active_model_key(engine),
        models=models,
    )
