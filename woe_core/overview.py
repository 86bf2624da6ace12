"""What the Home page and ``status`` show: database, data, certification, models."""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from . import certify, db, registry


@dataclass(frozen=True)
class Overview:
    database: db.DatabaseInfo
    snapshots: int
    image_rows: int
    listings: int
    certification: certify.CertificationStatus
    active_model: str | None
    models: int


def overview(engine: Engine) -> Overview:
    """One read of everything the landing page shows."""
    with engine.connect() as conn:
        counts = conn.execute(sa.text(
            "SELECT (SELECT count(*) FROM ml.socio_market_feature_store_train_v) AS snapshots, "
            "(SELECT count(*) FROM ml.iphone_image_features_unified_v1_train_v) AS image_rows, "
            "(SELECT count(DISTINCT listing_id) FROM ml.socio_market_feature_store_train_v) AS listings, "
            "(SELECT count(*) FROM ml.woe_anchor_model_registry_v1) AS models")).one()
    return Overview(
        database=db.describe(engine),
        snapshots=counts.snapshots, image_rows=counts.image_rows, listings=counts.listings,
        certification=certify.status(engine),
        active_model=registry.active_model_key(engine),
        models=counts.models,
    )
