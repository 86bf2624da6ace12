"""Reviewer identity and the app-level promotion checks (the database applies its own as well)."""

import pytest

from woe_core import promote, registry, reviewer, train
from woe_core.errors import PromotionRefused

LOGIN = reviewer.Settings(login_configured=True, promoters=("pat@example.com",), four_eyes=False)


@pytest.mark.parametrize(
    ("env", "secrets", "login", "expected"),
    [
        ({}, None, False, reviewer.Settings(False, (), False)),
        (
            {"WOE_PROMOTERS": "A@x.com, b@x.com", "WOE_FOUR_EYES": "yes"},
            None,
            True,
            reviewer.Settings(True, ("a@x.com", "b@x.com"), True),
        ),
        (
            {"WOE_PROMOTERS": "env@x.com"},
            {"WOE_PROMOTERS": ["Sec@x.com"], "WOE_FOUR_EYES": "0"},
            True,
            reviewer.Settings(True, ("sec@x.com",), False),
        ),
    ],
)
def test_settings_come_from_secrets_then_environment(env, secrets, login, expected):
    assert reviewer.settings_from(env, secrets, login) == expected


def test_local_mode_acts_as_the_local_actor(monkeypatch):
    monkeypatch.setenv("WOE_ACTOR", "dana")
    who = reviewer.reviewer_from(None, reviewer.Settings(False, (), False))
    assert (who.name, who.mode, who.can_promote) == ("dana", "local", True)


@pytest.mark.parametrize(
    ("user", "name", "can", "why"),
    [
        (None, None, False, "sign in"),
        ({"is_logged_in": False}, None, False, "sign in"),
        ({"is_logged_in": True, "email": "Pat@Example.com"}, "Pat@Example.com", True, ""),
        (
            {"is_logged_in": True, "email": "eve@example.com"},
            "eve@example.com",
            False,
            "not in the configured promoters",
        ),
        ({"is_logged_in": True}, None, False, "no email or name"),
    ],
)
def test_signed_in_users_promote_only_when_listed(user, name, can, why):
    who = reviewer.reviewer_from(user, LOGIN)
    assert (who.name, who.can_promote) == (name, can) and why in who.why_not


def test_refused_reviewer_changes_nothing(two_models):
    engine, first, second = two_models
    eve = reviewer.reviewer_from({"is_logged_in": True, "email": "eve@example.com"}, LOGIN)
    with pytest.raises(PromotionRefused, match="eve@example.com is not in the configured promoters list"):
        reviewer.promote_as(engine, eve, LOGIN, second, "looks good")
    with pytest.raises(PromotionRefused, match="rollback refused"):
        reviewer.rollback_as(engine, eve, "undo")
    assert registry.active_model_key(engine) == first


def _trained_by(engine, actor: str) -> str:
    cutoff = train.default_cutoff(*train.data_window(engine)[:2])
    return train.train(engine, train.TrainParams(cutoff, 45.0), actor).model_key


def test_four_eyes_compares_signed_in_identities_behind_a_vouching_login(certified_engine, login):
    """The app logs in as a member of woe_sso: its signed-in users are the identities."""
    app = login("woe_trainer", "woe_promoter", "woe_sso")
    rules = reviewer.Settings(True, ("bob", "pat@example.com"), four_eyes=True)
    model = _trained_by(app, "bob")
    bob = reviewer.reviewer_from({"is_logged_in": True, "name": "bob"}, rules)
    with pytest.raises(PromotionRefused, match="four-eyes rule: bob is the identity that trained it"):
        reviewer.promote_as(app, bob, rules, model, "my own model")
    assert registry.active_model_key(certified_engine) is None
    pat = reviewer.reviewer_from({"is_logged_in": True, "email": "pat@example.com"}, rules)
    reviewer.promote_as(app, pat, rules, model, "reviewed by someone else")
    assert registry.active_model_key(certified_engine) == model
    assert promote.history(certified_engine)["actor_identity"].iloc[0] == "sso:pat@example.com"


def test_a_declared_actor_cannot_satisfy_four_eyes(certified_engine, login):
    """A login that does not vouch for sign-ins is one identity, whatever actor it declares."""
    cli = login("woe_trainer", "woe_promoter")
    rules = reviewer.Settings(False, (), four_eyes=True)
    model = _trained_by(cli, "alice")  # declared as somebody else
    pat = reviewer.Reviewer("pat", "local", True)
    check = reviewer.checklist(cli, pat, rules, model)[-1]
    assert check.name == "four_eyes" and check.passed is False
    assert f"login:{cli.url.username}" in check.detail and "declared alice" in check.detail
    with pytest.raises(PromotionRefused, match="four-eyes rule"):
        reviewer.promote_as(cli, pat, rules, model, "someone else, I promise")
    assert registry.active_model_key(certified_engine) is None
    # Another login is another identity.
    other = login("woe_promoter")
    reviewer.promote_as(other, pat, rules, model, "a second login")
    assert registry.active_model_key(certified_engine) == model


def test_checklist_adds_advisory_metrics_and_a_blocking_four_eyes_check(two_models):
    engine, first, second = two_models  # second was trained by "bob"; first is active
    rules = reviewer.Settings(True, ("bob",), four_eyes=True)
    bob = reviewer.reviewer_from({"is_logged_in": True, "name": "bob"}, rules)
    checks = {c.name: c for c in reviewer.checklist(engine, bob, rules, second)}
    assert {"model_exists", "artifacts_complete", "certification_fresh", "metrics_vs_active", "four_eyes"} <= set(
        checks
    )
    assert checks["metrics_vs_active"].detail.startswith("AUC ") and "common rows" in checks["metrics_vs_active"].detail
    assert not checks["four_eyes"].passed and "(declared bob)" in checks["four_eyes"].detail
    assert reviewer.blocking(list(checks.values())) == ["four_eyes"]


def _weaker_candidate(engine, first, second):
    """Make the model with the higher common-window AUC active; return (active, weaker candidate)."""
    check = reviewer.metrics_vs_active(engine, second, first)
    strong, weak = (second, first) if check.passed else (first, second)
    if registry.active_model_key(engine) != strong:
        promote.promote(engine, strong, "carol", "the stronger model")
    return strong, weak


def test_a_failed_advisory_check_must_be_acknowledged_and_is_typed(two_models):
    engine, first, second = two_models
    local = reviewer.Settings(False, (), four_eyes=False)
    me = reviewer.reviewer_from(None, local)
    strong, weak = _weaker_candidate(engine, first, second)
    checks = reviewer.checklist(engine, me, local, weak)
    kinds = {c.name: reviewer.check_kind(c) for c in checks}
    assert kinds["metrics_vs_active"] == "advisory" and kinds["certification_fresh"] == "blocking"
    assert reviewer.failed_advisories(checks) == ["metrics_vs_active"] and reviewer.blocking(checks) == []
    with pytest.raises(PromotionRefused, match="metrics_vs_active must be acknowledged"):
        reviewer.promote_as(engine, me, local, weak, "no acknowledgement")
    assert registry.active_model_key(engine) == strong
    reviewer.promote_as(engine, me, local, weak, "acknowledged", acknowledged=("metrics_vs_active",))
    assert registry.active_model_key(engine) == weak


def test_promotion_refuses_a_digest_other_than_the_reviewed_one(two_models):
    engine, first, second = two_models
    local = reviewer.Settings(False, (), four_eyes=False)
    me = reviewer.reviewer_from(None, local)
    digest = registry.artifact_digest(engine, second)
    assert len(digest) == 64 and digest != registry.artifact_digest(engine, first)
    assert digest == registry.artifact_digest(engine, second)  # deterministic
    with pytest.raises(
        PromotionRefused, match=f"its artifact digest is {digest}, not {'0' * 64} that the reviewer saw"
    ):
        reviewer.promote_as(
            engine, me, local, second, "stale view", expected_digest="0" * 64, acknowledged=("metrics_vs_active",)
        )
    reviewer.promote_as(
        engine, me, local, second, "as reviewed", expected_digest=digest, acknowledged=("metrics_vs_active",)
    )
    assert registry.active_model_key(engine) == second
