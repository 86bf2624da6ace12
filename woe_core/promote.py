"""Promotion (docs/governance.md): the preflight checklist, promote, roll back, history, delete.

Every rule lives in the database (``sql/V0006__governance.sql`` and
``sql/V0008__integrity.sql``), so a psql user gets the same answers as the app:
``ml.promote_woe_anchor_model`` is the only way to change the active model,
serialised by the project's promotion lock; it re-derives the model from the
certified data (provenance), checks the artifact digest the reviewer saw, and
refuses with SQLSTATE WP001 (``PromotionRefused``) or, for a missing or stale
certification, WC001 (``CertificationRequired``). Rolling back is
``ml.rollback_woe_anchor_model``. This module validates the inputs up front,
calls those functions and translates their refusals.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from .db import frame, woe_errors
from .errors import InvalidParameter
from .identity import require_actor

MAX_REASON_CHARS = 2000
MAX_HISTORY_ROWS = 100_000

HISTORY_COLUMNS = [
    "promotion_id",
    "promoted_at",
    "actor",
    "from_model_key",
    "to_model_key",
    "reason",
    "db_user",
    "actor_identity",
    "artifact_sha256",
    "acknowledged_checks",
]
_DIGEST = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class Check:
    """One line of the promotion checklist: ``detail`` says what was found."""

    name: str  # model_exists, schema_served, artifacts_complete, not_active, certification_fresh, provenance
    passed: bool | None  # None: not evaluated yet (provenance is verified at promotion)
    detail: str


def _model_key(model_key: object) -> str:
    if not isinstance(model_key, str) or not model_key.strip():
        raise InvalidParameter(
            f"model_key must be a non-empty model key such as 'tom_aft_v1_20260601_000000', got {model_key!r}"
        )
    return model_key.strip()


def _reason(reason: object) -> str:
    if not isinstance(reason, str) or not reason.strip():
        raise InvalidParameter(f"reason must be a non-empty explanation of the promotion, got {reason!r}")
    if len(reason) > MAX_REASON_CHARS:
        raise InvalidParameter(f"reason must be at most {MAX_REASON_CHARS} characters, got {len(reason)}")
    return reason.strip()


def preflight(engine: Engine, model_key: str) -> list[Check]:
    """The checklist the database applies before promoting ``model_key``, every check evaluated.

    In order: model_exists, schema_served (its band_schema_version is one the live
    views serve), artifacts_complete (final cuts and a final map row for every
    band), not_active, certification_fresh (the entrypoint's latest certification
    passed, is younger than 24 h and the data has not changed since). A promotion
    succeeds when all pass (and nothing changes in between).
    """
    key = _model_key(model_key)
    with woe_errors(), engine.connect() as conn:
        rows = conn.execute(
            sa.text("SELECT check_name, passed, detail FROM ml.woe_anchor_promotion_preflight_v1(:k)"), {"k": key}
        ).all()
    return [Check(name, None if passed is None else bool(passed), detail) for name, passed, detail in rows]


def promote(
    engine: Engine,
    model_key: str,
    actor: str,
    reason: str,
    *,
    expected_digest: str | None = None,
    acknowledged: Sequence[str] = (),
) -> int:
    """Make ``model_key`` the one active model and return the new history row's promotion_id.

    Atomic: the previous model is deactivated, the candidate activated and the
    history row appended in one transaction, or nothing changes. The database
    first re-derives the model from the certified data and refuses any
    difference; with ``expected_digest`` (the artifact digest the reviewer saw,
    ``registry.artifact_digest``) it also refuses a model whose artifacts differ from it.
    ``acknowledged`` names the failed advisory checks the reviewer acknowledged;
    the history records them. Raises ``InvalidParameter`` for a blank actor or
    reason or a malformed digest, ``PromotionRefused`` naming the model and the
    failed check, ``CertificationRequired`` when the data's certification is
    missing, failed or stale, ``LockBusy`` when another promotion holds the lock
    for longer than its bounded wait.
    """
    key = _model_key(model_key)
    who = require_actor(actor)
    why = _reason(reason)
    if isinstance(acknowledged, str) or not all(isinstance(c, str) and c.strip() for c in acknowledged):
        raise InvalidParameter(f"acknowledged must be a sequence of check names, got {acknowledged!r}")
    if expected_digest is not None and (not isinstance(expected_digest, str) or not _DIGEST.match(expected_digest)):
        raise InvalidParameter(f"expected_digest must be 64 lowercase hex digits, got {expected_digest!r}")
    acks = [str(a) for a in acknowledged]
    with woe_errors(), engine.begin() as conn:
        return int(
            conn.execute(
                sa.text("SELECT ml.promote_woe_anchor_model(:k, :a, :r, :d, CAST(:ack AS text[]))"),
                {"k": key, "a": who, "r": why, "d": expected_digest, "ack": acks},
            ).scalar_one()
        )


def rollback(engine: Engine, actor: str, reason: str) -> str:
    """Promote the model that was active before the current one; return its key.

    The database (``ml.rollback_woe_anchor_model``) reads the latest promotion
    under the promotion lock and promotes its ``from_model_key`` with every check
    of a promotion. Rolling back twice returns to where it started (each rollback
    is itself a promotion). Raises ``PromotionRefused`` when no promotion is
    recorded, the latest one had no previous model, or the active model is not
    the one the latest promotion activated, and as ``promote`` otherwise.
    """
    who = require_actor(actor)
    why = _reason(reason)
    with woe_errors(), engine.begin() as conn:
        return str(
            conn.execute(sa.text("SELECT ml.rollback_woe_anchor_model(:a, :r)"), {"a": who, "r": why}).scalar_one()
        )


def history(engine: Engine, limit: int = 100) -> pd.DataFrame:
    """The latest ``limit`` promotions, newest first (columns ``HISTORY_COLUMNS``).

    ``from_model_key`` is None (not NaN) where no model was active before.
    """
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_HISTORY_ROWS:
        raise InvalidParameter(f"limit must be an integer in [1, {MAX_HISTORY_ROWS}], got {limit!r}")
    with engine.connect() as conn:
        rows = frame(
            conn,
            sa.text(
                f"SELECT {', '.join(HISTORY_COLUMNS)} FROM ml.woe_anchor_promotions_v1 "
                "ORDER BY promotion_id DESC LIMIT :n"
            ),
            {"n": limit},
        )
    previous = rows["from_model_key"].astype(object)
    rows["from_model_key"] = previous.where(previous.notna(), None)
    return rows


def delete_candidate(engine: Engine, model_key: str) -> None:
    """Delete a never-promoted candidate with all its cuts, maps and scores.

    Raises ``PromotionRefused`` naming the key when the model does not exist, is
    active or appears in the promotion history (kept for audit and rollback).
    """
    key = _model_key(model_key)
    with woe_errors(), engine.begin() as conn:
        conn.execute(sa.text("SELECT ml.delete_woe_anchor_model(:k)"), {"k": key})
