"""The feature-store contract (docs/architecture.md) and a check that names every breach."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from .errors import ContractError

SOCIO_STORE = "ml.socio_market_feature_store_train_v"
IMAGE_STORE = "ml.iphone_image_features_unified_v1_train_v"

# Column -> PostgreSQL type name as format_type() prints it.
CONTRACT: dict[str, dict[str, str]] = {
    SOCIO_STORE: {
        "listing_id": "bigint",
        "generation": "text",
        "t0": "timestamp with time zone",
        "delta_vs_sold_median_30d": "double precision",
        "seller_trust_tier": "text",
        "ships": "boolean",
        "negotiable": "boolean",
        "item_condition": "text",
        "dmg_ai_prob": "double precision",
        "battery_health_pct": "smallint",
        "sold_at": "timestamp with time zone",
        "feature_asof_ts": "timestamp with time zone",
    },
    IMAGE_STORE: {
        "listing_id": "bigint",
        "t0": "timestamp with time zone",
        "n_photos": "smallint",
        "photo_quality": "double precision",
        "lighting": "double precision",
        "background_clean": "double precision",
        "vision_damage_prob": "double precision",
        "has_box": "boolean",
        "has_charger": "boolean",
    },
}

_COLUMNS_SQL = sa.text(
    """
    SELECT a.attname AS column_name, format_type(a.atttypid, a.atttypmod) AS column_type
      FROM pg_attribute AS a
     WHERE a.attrelid = to_regclass(:relation) AND a.attnum > 0 AND NOT a.attisdropped
    """
)


def contract_problems(conn: Connection | Engine) -> list[str]:
    """Every missing store, missing column and wrong type, as readable sentences."""
    if isinstance(conn, Engine):
        with conn.connect() as c:
            return contract_problems(c)
    problems: list[str] = []
    for relation, expected in CONTRACT.items():
        exists = conn.execute(sa.text("SELECT to_regclass(:r) IS NOT NULL"), {"r": relation}).scalar_one()
        if not exists:
            problems.append(f"{relation} does not exist")
            continue
        actual = {r.column_name: r.column_type for r in conn.execute(_COLUMNS_SQL, {"relation": relation})}
        for column, type_name in expected.items():
            if column not in actual:
                problems.append(f"{relation} is missing column {column!r} (expected {type_name})")
            elif actual[column] != type_name:
                problems.append(
                    f"{relation}.{column} has type {actual[column]!r}, expected {type_name!r}"
                )
    return problems


def check_contract(conn: Connection | Engine) -> None:
    """Raise ``ContractError`` listing every breach of the feature-store contract."""
    problems = contract_problems(conn)
    if problems:
        raise ContractError(problems)
