"""Who is reviewing in the app, and whether they may promote.

With Streamlit's built-in OIDC login configured, the reviewer is the signed-in
user and may promote only when listed in ``WOE_PROMOTERS``; without an identity
provider (the embedded default) the app runs in local mode as ``WOE_ACTOR`` (or
the OS user). The optional four-eyes rule (``WOE_FOUR_EYES``) forbids promoting a
model one trained oneself. These checks run inside the promote action, and the
database still applies its own (``ml.promote_woe_anchor_model``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from . import compare, promote, registry
from .errors import NotFound, PromotionRefused
from .identity import local_actor


@dataclass(frozen=True)
class Reviewer:
    name: str | None  # None: login configured but nobody signed in
    mode: str  # "oidc" or "local"
    can_promote: bool
    why_not: str = ""


@dataclass(frozen=True)
class Settings:
    login_configured: bool
    promoters: tuple[str, ...]
    four_eyes: bool


def settings_from(env: Mapping[str, str], secrets: Mapping | None, login_configured: bool) -> Settings:
    """Read WOE_PROMOTERS (comma-separated) and WOE_FOUR_EYES (1/true/yes) from secrets, then the environment."""
    def get(name: str) -> str:
        if secrets is not None and name in secrets:
            value = secrets[name]
            return ",".join(value) if isinstance(value, list | tuple) else str(value)
        return env.get(name, "")

    promoters = tuple(p.strip().lower() for p in get("WOE_PROMOTERS").split(",") if p.strip())
    return Settings(login_configured, promoters, get("WOE_FOUR_EYES").strip().lower() in ("1", "true", "yes", "on"))


def reviewer_from(user: Mapping | None, settings: Settings) -> Reviewer:
    """The reviewer for a Streamlit ``st.user`` mapping under ``settings``."""
    if not settings.login_configured:
        return Reviewer(local_actor(), "local", True)
    if not user or not user.get("is_logged_in"):
        return Reviewer(None, "oidc", False, "sign in to promote")
    name = str(user.get("email") or user.get("name") or "").strip()
    if not name:
        return Reviewer(None, "oidc", False, "the identity provider returned no email or name")
    if name.lower() not in settings.promoters:
        return Reviewer(name, "oidc", False, f"{name} is not in the configured promoters list (WOE_PROMOTERS)")
    return Reviewer(name, "oidc", True)


ADVISORY_CHECKS = frozenset({"metrics_vs_active"})  # shown to the reviewer, never blocking


def _four_eyes(engine: Engine, reviewer: Reviewer, model_key: str) -> promote.Check:
    """Four-eyes on real identities (``ml.woe_identity_v1``): the model's registering login (or the
    signed-in trainer, when that login vouches for sign-ins) against this connection's login (or
    the signed-in reviewer, likewise). A declared ``--actor`` never satisfies it."""
    with engine.connect() as conn:
        row = conn.execute(sa.text(
            "SELECT created_by, ml.woe_identity_v1(created_db_user, created_by) AS trainer, "
            "ml.woe_identity_v1(session_user, :me) AS me "
            "FROM ml.woe_anchor_model_registry_v1 WHERE model_key = :k"),
            {"k": model_key, "me": reviewer.name or ""}).one_or_none()
    if row is None:
        raise NotFound(f"model {model_key!r} does not exist")
    ok = row.trainer != row.me
    return promote.Check("four_eyes", ok, f"trained by {row.trainer} (declared {row.created_by}), "
                                          f"promoting as {row.me}")


def checklist(engine: Engine, reviewer: Reviewer, settings: Settings, model_key: str) -> list[promote.Check]:
    """The Promote page's checklist: the database's preflight, EVAL AUC against the active
    model (advisory), and the four-eyes rule when configured."""
    checks = promote.preflight(engine, model_key)
    active = registry.active_model_key(engine)
    if active and active != model_key:
        aucs = {k: d.get("eval", {}).get("auc") for k, d in compare.metrics(engine, [model_key, active]).items()}
        cand, act = aucs[model_key], aucs[active]
        if cand is None or act is None:
            checks.append(promote.Check("metrics_vs_active", False, "no EVAL AUC to compare"))
        else:
            checks.append(promote.Check("metrics_vs_active", cand >= act, f"EVAL AUC {cand:.4f} vs active {act:.4f}"))
    if settings.four_eyes:
        checks.append(_four_eyes(engine, reviewer, model_key))
    return checks


def blocking(checks: list[promote.Check]) -> list[str]:
    """Names of the failed checks that stop a promotion (a check not evaluated yet, ``passed is None``,
    runs inside the promotion itself)."""
    return [c.name for c in checks if c.passed is False and c.name not in ADVISORY_CHECKS]


def promote_as(engine: Engine, reviewer: Reviewer, settings: Settings, model_key: str, reason: str, *,
               expected_digest: str | None = None, acknowledged: Sequence[str] = ()) -> int:
    """Promote ``model_key`` on behalf of ``reviewer`` after the app-level checks; returns the history id.

    ``expected_digest`` is the artifact digest the reviewer's page showed; ``acknowledged`` the failed
    advisory checks the reviewer acknowledged (recorded in the history)."""
    if not reviewer.can_promote or not reviewer.name:
        raise PromotionRefused(f"promotion of {model_key!r} refused: {reviewer.why_not or 'not allowed'}")
    if settings.four_eyes and not _four_eyes(engine, reviewer, model_key).passed:
        raise PromotionRefused(f"promotion of {model_key!r} refused: four-eyes rule: {reviewer.name} is the identity "
                               "that trained it, so another reviewer must promote it")
    return promote.promote(engine, model_key, reviewer.name, reason, expected_digest=expected_digest,
                           acknowledged=acknowledged)


def rollback_as(engine: Engine, reviewer: Reviewer, reason: str) -> str:
    """Roll back on behalf of ``reviewer`` (same permission as promoting)."""
    if not reviewer.can_promote or not reviewer.name:
        raise PromotionRefused(f"rollback refused: {reviewer.why_not or 'not allowed'}")
    return promote.rollback(engine, reviewer.name, reason)
