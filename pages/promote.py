"""Promote: checklist (blocking and advisory checks), confirm with a reason, promote atomically; history, rollback."""

import pandas as pd
import streamlit as st

from pages._ui import after_action, attempt, data_range, engine, reviewer, seed, settings, show_flash
from woe_core import compare, promote, registry
from woe_core.display import markdown_text
from woe_core.reviewer import blocking, check_kind, checklist, delete_as, failed_advisories, promote_as, rollback_as

st.title("Promote a model")
show_flash()
who, conf = reviewer(), settings()
if who.mode == "local":
    st.caption(f"Local mode: acting as **{markdown_text(who.name)}** (no identity provider configured).")
elif who.name:
    st.caption(
        f"Signed in as **{markdown_text(who.name)}**" + ("" if who.can_promote else f" — {markdown_text(who.why_not)}")
    )
else:
    st.warning("Sign in to promote.")
    st.button("Sign in", on_click=st.login)

models = registry.list_models(engine())
labels = compare.short_labels(list(models["model_key"]))
candidates = models.loc[~models["is_active"], "model_key"].tolist()
active = registry.active_model_key(engine())
if active:
    st.markdown(
        f"Active model: **`{active}`** ({labels[active]}) · artifact digest "
        f"`{registry.artifact_digest(engine(), active)[:16]}…`"
    )
else:
    st.markdown("No model is active.")

if st.session_state.pop("promote_reset", False):  # after an action: nothing chosen, link cleared
    st.session_state["promote_model"] = None
    st.query_params.pop("model", None)
wanted = st.query_params.get("model")
seed("promote_model", wanted if wanted in candidates else None)


def forget_confirmation() -> None:
    for k in [k for k in st.session_state if str(k).startswith(("confirm_", "ack_"))] + ["promote_reason"]:
        st.session_state.pop(k, None)


if not candidates:
    st.info("No candidate to promote: train one on the Train page.")
else:
    key = st.selectbox(
        "Candidate",
        candidates,
        key="promote_model",
        index=None,
        placeholder="Choose a candidate",
        format_func=lambda k: f"{labels[k]} — {k}",
    )
    if key:
        st.query_params["model"] = key
    else:
        st.query_params.pop("model", None)


@st.cache_data(ttl=300, show_spinner="Scoring the candidate and the active model on common rows…")
def common_window(db: str, candidate: str, active_key: str, digests: tuple, data: tuple) -> compare.CommonWindow:
    """Kept per pair of models and their artifact digests (cleared after any write in the app)."""
    return compare.common_window_metrics(engine(), [candidate, active_key], data_range=data)


if candidates and key:
    digest = attempt(lambda: registry.artifact_digest(engine(), key))
    st.markdown(f"Artifact digest of `{key}`: `{digest}`")
    window = None
    # Small data: the candidate and the active model are scored on common rows on every visit;
    # large data: on request (the advisory check fails as not run until then).
    on_visit = compare.scores_on_visit(engine())
    if active and (on_visit or st.session_state.get("promote_scored") == (key, active)):
        window = attempt(
            lambda: common_window(
                engine().url.render_as_string(hide_password=True),
                key,
                active,
                (digest, registry.artifact_digest(engine(), active)),
                data_range(),
            )
        )
    elif active and st.button(
        "Score the candidate and the active model on common rows",
        key="promote_score_window",
        help="Reads every snapshot after the later cutoff: on data this size it runs only on request",
    ):
        st.session_state["promote_scored"] = (key, active)
        st.rerun()
    checks = attempt(lambda: checklist(engine(), who, conf, key, common=window, compute_common=on_visit)) or []
    table = pd.DataFrame(
        [
            {
                "check": c.name,
                "kind": check_kind(c),
                "result": "pass" if c.passed else "at promotion" if c.passed is None else "FAIL",
                "detail": c.detail,
            }
            for c in checks
        ],
        columns=["check", "kind", "result", "detail"],
    )

    def colour(row: pd.Series) -> list[str]:
        bad = row["result"] == "FAIL"
        tint = (
            "" if not bad else "background-color: #fde2e1" if row["kind"] == "blocking" else "background-color: #fff3cd"
        )
        return [tint for _ in row]

    st.dataframe(
        table.style.apply(colour, axis=1),
        hide_index=True,
        width="stretch",
        column_config={
            "kind": st.column_config.TextColumn(
                help="blocking: a failure stops the promotion; advisory: a failure must be acknowledged"
            )
        },
    )
    if any(c.name == "provenance" and c.passed is None for c in checks) and st.button(
        "Verify provenance now", help="Re-derive the model from the certified data; promotion does it anyway"
    ):
        differences = attempt(lambda: registry.verify_provenance(engine(), key))
        if differences is not None:
            after_action(
                "success" if not differences else "error",
                "The certified data reproduces the model."
                if not differences
                else f"The certified data does not reproduce the model: {len(differences)} difference(s).",
            )
    blocked_by = blocking(checks) if checks else ["checklist"]
    advisories = failed_advisories(checks)
    if blocked_by:
        st.error("Promotion blocked by: " + ", ".join(blocked_by))
    elif advisories:
        st.warning(
            "Advisory check(s) failed: "
            + ", ".join(advisories)
            + " — you may promote, but must acknowledge each in the confirmation."
        )

    if active:
        if window is not None:
            st.markdown("**Candidate and active model on the same rows** — " + window.describe())
            shown = window.metrics.assign(
                model=[("candidate " if k == key else "active ") + labels[k] for k in window.metrics["model_key"]]
            )
            st.dataframe(shown[["model", "n", "positives", "auc", "log_loss", "brier", "model_key"]], hide_index=True)
        st.page_link(
            "pages/compare.py",
            label="Compare in detail",
            icon=":material/compare_arrows:",
            query_params={"models": f"{active},{key}"},
        )

    @st.dialog("Confirm promotion", on_dismiss=forget_confirmation)
    def confirm(model_key: str, seen_digest: str, to_acknowledge: list[str]) -> None:
        st.write(f"Make **`{model_key}`** the active model for every client?")
        st.caption(f"Artifact digest as reviewed: `{seen_digest}`")
        acks = []
        if to_acknowledge:
            st.warning("These advisory checks failed; tick each to acknowledge it:")
            for name in to_acknowledge:
                detail = next((c.detail for c in checks if c.name == name), "")
                if st.checkbox(f"I acknowledge that {name} failed ({detail})", key=f"ack_{name}"):
                    acks.append(name)
        reason = st.text_area("Reason (required)", key="promote_reason")
        missing = [a for a in to_acknowledge if a not in acks]
        if st.button(
            "Promote",
            type="primary",
            key="confirm_promote",
            disabled=bool(missing),
            help="acknowledge: " + ", ".join(missing) if missing else None,
        ):
            done = attempt(
                lambda: promote_as(
                    engine(),
                    reviewer(),
                    settings(),
                    model_key,
                    reason,
                    expected_digest=seen_digest,
                    acknowledged=tuple(acks),
                )
            )
            if done is not None:
                forget_confirmation()
                st.session_state["promote_reset"] = True
                ack_text = f"; acknowledged: {', '.join(acks)}" if acks else ""
                after_action("success", f"`{model_key}` is now the active model (promotion #{done}{ack_text}).")

    # The dialog stays open across reruns until promoted or dismissed.
    if st.button(
        "Promote…",
        type="primary",
        disabled=bool(blocked_by) or not who.can_promote or digest is None,
        help="blocked by: " + ", ".join(blocked_by) if blocked_by else None,
    ):
        st.session_state["confirm_model"] = key
        st.session_state["confirm_digest"] = digest
        st.session_state["confirm_acks"] = advisories
    if st.session_state.get("confirm_model") == key:
        confirm(key, st.session_state["confirm_digest"], st.session_state["confirm_acks"])

    def forget_delete() -> None:
        st.session_state.pop("delete_model", None)

    @st.dialog("Delete candidate", on_dismiss=forget_delete)
    def confirm_delete(model_key: str) -> None:
        st.write(
            f"Delete **`{model_key}`** with all its cuts, maps and scores? Only a model that was never "
            "promoted can be deleted."
        )
        if st.button("Delete", type="primary", key="confirm_delete") and attempt(
            lambda: delete_as(engine(), reviewer(), model_key) or True
        ):
            forget_delete()
            st.session_state["promote_reset"] = True
            after_action("success", f"Deleted candidate `{model_key}` and all its artifacts.")

    if who.can_promote and st.button("Delete candidate…"):
        st.session_state["delete_model"] = key
    if st.session_state.get("delete_model") == key:
        confirm_delete(key)

st.subheader("History")
history = promote.history(engine())
shown = history.assign(
    artifact_sha256=history["artifact_sha256"].str[:12],
    acknowledged_checks=history["acknowledged_checks"].map(lambda a: ", ".join(a or [])),
)
small = {"width": "small"}
st.dataframe(
    shown[
        [
            "promotion_id",
            "promoted_at",
            "to_model_key",
            "from_model_key",
            "actor",
            "actor_identity",
            "reason",
            "acknowledged_checks",
            "artifact_sha256",
        ]
    ],
    hide_index=True,
    column_config={
        "promotion_id": st.column_config.NumberColumn("#", **small),
        "promoted_at": st.column_config.DatetimeColumn("promoted at", width="medium"),
        "to_model_key": st.column_config.TextColumn("to", **small),
        "from_model_key": st.column_config.TextColumn("from", **small),
        "actor": st.column_config.TextColumn("actor", **small),
        "actor_identity": st.column_config.TextColumn(
            "identity", help="the real identity: the signed-in user or the database login", **small
        ),
        "reason": st.column_config.TextColumn("reason", width="medium"),
        "acknowledged_checks": st.column_config.TextColumn(
            "acknowledged", help="failed advisory checks acknowledged", **small
        ),
        "artifact_sha256": st.column_config.TextColumn(
            "digest", help="artifact digest promoted (first 12 hex digits)", **small
        ),
    },
)


def forget_rollback() -> None:
    st.session_state.pop("rollback_open", None)
    st.session_state.pop("rollback_reason", None)


@st.dialog("Confirm rollback", on_dismiss=forget_rollback)
def confirm_rollback() -> None:
    previous = history.iloc[0]["from_model_key"]
    st.write(f"Return to **`{previous}`**, the model active before the latest promotion?")
    reason = st.text_area("Reason (required)", key="rollback_reason")
    if st.button("Roll back", type="primary", key="confirm_rollback"):
        done = attempt(lambda: rollback_as(engine(), reviewer(), reason))
        if done is not None:
            forget_rollback()
            st.session_state["promote_reset"] = True
            after_action("success", f"Rolled back: `{done}` is now the active model.")


if len(history) and history.iloc[0]["from_model_key"] and who.can_promote and st.button("Roll back…"):
    st.session_state["rollback_open"] = True
if st.session_state.get("rollback_open"):
    confirm_rollback()
