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

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from . import compare, promote, registry
from .errors import NotFound, PromotionRefused, WoeError
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


def check_kind(check: promote.Check) -> str:
    """ "advisory" (a failure must be acknowledged, does not stop a promotion) or "blocking"."""
    return "advisory" if check.name in ADVISORY_CHECKS else "blocking"


def failed_advisories(checks: list[promote.Check]) -> list[str]:
    """Names of the failed advisory checks: each must be acknowledged in the confirmation."""
    return [c.name for c in checks if not c.passed and c.name in ADVISORY_CHECKS]


def _four_eyes(engine: Engine, reviewer: Reviewer, model_key: str) -> promote.Check:
    """Four-eyes on real identities (``ml.woe_identity_v1``): the model's registering login (or the
    signed-in trainer, when that login vouches for sign-ins) against this connection's login (or
    the signed-in reviewer, likewise). A declared ``--actor`` never satisfies it."""
    with engine.connect() as conn:
        row = conn.execute(
            sa.text(
                "SELECT created_by, ml.woe_identity_v1(created_db_user, created_by) AS trainer, "
                "ml.woe_identity_v1(session_user, :me) AS me "
                "FROM ml.woe_anchor_model_registry_v1 WHERE model_key = :k"
            ),
            {"k": model_key, "me": reviewer.name or ""},
        ).one_or_none()
    if row is None:
        raise NotFound(f"model {model_key!r} does not exist")
    ok = row.trainer != row.me
    return promote.Check(
        "four_eyes", ok, f"trained by {row.trainer} (declared {row.created_by}), promoting as {row.me}"
    )


def checklist(
    engine: Engine,
    reviewer: Reviewer,
    settings: Settings,
    model_key: str,
    common: compare.CommonWindow | None = None,
    compute_common: bool = True,
) -> list[promote.Check]:
    """The Promote page's checklist: the database's preflight, AUC against the active model
    on a common window (advisory), and the four-eyes rule when configured.

    ``common``: the candidate's and the active model's common-window metrics when the
    caller has them already; otherwise they are computed, unless ``compute_common`` is
    False: then the advisory check fails as not run yet (a promotion must acknowledge it).
    """
    checks = promote.preflight(engine, model_key)
    active = registry.active_model_key(engine)
    if active and active != model_key:
        usable = common is not None and set(common.metrics["model_key"]) == {model_key, active}
        if usable or compute_common:
            checks.append(metrics_vs_active(engine, model_key, active, common=common if usable else None))
        else:
            checks.append(promote.Check("metrics_vs_active", False, NOT_COMPARED))
    if settings.four_eyes:
        checks.append(_four_eyes(engine, reviewer, model_key))
    return checks


NOT_COMPARED = "not compared yet: the common window was not scored (it grows with the data; score it on demand)"


def metrics_vs_active(
    engine: Engine, model_key: str, active: str, common: compare.CommonWindow | None = None
) -> promote.Check:
    """AUC of the candidate against the active model on the same rows (``compare.common_window_metrics``
    over the default window: after the later of the two cutoffs, labelled as of the data end)."""
    try:
        cw = common or compare.common_window_metrics(engine, [model_key, active])
    except WoeError as exc:
        return promote.Check("metrics_vs_active", False, f"cannot compare on a common window: {exc}")
    aucs = dict(zip(cw.metrics["model_key"], cw.metrics["auc"], strict=True))
    cand, act = aucs[model_key], aucs[active]
    n = int(cw.metrics["n"].iloc[0])
    where = f"on {n:,} common rows (t0 from {cw.start:%Y-%m-%d})"
    if pd.isna(cand) or pd.isna(act):
        return promote.Check("metrics_vs_active", False, f"no AUC to compare {where}")
    return promote.Check("metrics_vs_active", bool(cand >= act), f"AUC {cand:.4f} vs active {act:.4f} {where}")


def blocking(checks: list[promote.Check]) -> list[str]:
    """Names of the failed checks that stop a promotion (a check not evaluated yet, ``passed is None``,
    runs inside the promotion itself)."""
    return [c.name for c in checks if c.passed is False and c.name not in ADVISORY_CHECKS]


def promote_as(
    engine: Engine,
    reviewer: Reviewer,
    settings: Settings,
    model_key: str,
    reason: str,
    *,
    expected_digest: str | None = None,
    acknowledged: Sequence[str] = (),
) -> int:
    """Promote ``model_key`` on behalf of ``reviewer`` after the app-level checks; returns the history id.

    ``expected_digest``: the artifact digest the reviewer's page showed (the database refuses
    another); ``acknowledged``: the failed advisory checks the reviewer acknowledged (recorded
    with the promotion).
    """
    if not reviewer.can_promote or not reviewer.name:
        raise PromotionRefused(f"promotion of {model_key!r} refused: {reviewer.why_not or 'not allowed'}")
    if settings.four_eyes and not _four_eyes(engine, reviewer, model_key).passed:
        raise PromotionRefused(
            f"promotion of {model_key!r} refused: four-eyes rule: {reviewer.name} is the identity "
            "that trained it, so another reviewer must promote it"
        )
    unacknowledged = [
        c for c in failed_advisories(checklist(engine, reviewer, settings, model_key)) if c not in acknowledged
    ]
    if unacknowledged:
        raise PromotionRefused(
            f"promotion of {model_key!r} refused: the failed advisory check(s) "
            f"{', '.join(unacknowledged)} must be acknowledged first"
        )
    return promote.promote(
        engine, model_key, reviewer.name, reason, expected_digest=expected_digest, acknowledged=tuple(acknowledged)
    )


def rollback_as(engine: Engine, reviewer: Reviewer, reason: str) -> str:
    """Roll back on behalf of ``reviewer`` (same permission as promoting)."""
    if not reviewer.can_promote or not reviewer.name:
        raise PromotionRefused(f"rollback refused: {reviewer.why_not or 'not allowed'}")
    return promote.rollback(engine, reviewer.name, reason)


def delete_as(engine: Engine, reviewer: Reviewer, model_key: str) -> None:
    """Delete a never-promoted candidate on behalf of ``reviewer`` (same permission as promoting)."""
    if not reviewer.can_promote or not reviewer.name:
        raise PromotionRefused(f"deletion of {model_key!r} refused: {reviewer.why_not or 'not allowed'}")
    promote.delete_candidate(engine, model_key)
