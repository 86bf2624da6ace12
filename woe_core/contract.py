"""The feature-store contract (docs/architecture.md) and a check that names every breach."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from .errors import ContractError

SOCIO_STORE = "ml.socio_market_feature_store_train_v"
IMAGE_STORE = "ml.iphone_image_features_unified_v1_train_v"


def contract_problems(conn: Connection | Engine) -> list[str]:
    """Every missing store, missing column and wrong type, as readable sentences.

    The contract itself is data (``audit.dataset_contract``), checked by the
    database's ``audit.contract_problems()``, which certification runs too.
    """
    if isinstance(conn, Engine):
        with conn.connect() as c:
            return contract_problems(c)
    return list(conn.execute(sa.text("SELECT audit.contract_problems()")).scalar_one())


def check_contract(conn: Connection | Engine) -> None:
    """Raise ``ContractError`` listing every breach of the feature-store contract."""
    problems = contract_problems(conn)
    if problems:
        raise ContractError(problems)
