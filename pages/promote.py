"""Promote: preflight checklist, confirm with a reason, promote atomically; history and rollback."""

import streamlit as st

from pages._ui import attempt, changed, engine, reviewer, settings
from woe_core import promote, registry
from woe_core.display import markdown_text
from woe_core.reviewer import blocking, checklist, promote_as, rollback_as

st.title("Promote a model")
who, conf = reviewer(), settings()
if who.mode == "local":
    st.caption(f"Local mode: acting as **{markdown_text(who.name)}** (no identity provider configured).")
elif who.name:
    st.caption(f"Signed in as **{markdown_text(who.name)}**" + ("" if who.can_promote else f" — {markdown_text(who.why_not)}"))
else:
    st.warning("Sign in to promote.")
    st.button("Sign in", on_click=st.login)

models = registry.list_models(engine())
candidates = models.loc[~models["is_active"], "model_key"].tolist()
active = registry.active_model_key(engine())
st.markdown(f"Active model: **`{active}`**" if active else "No model is active.")

if candidates:
    wanted = st.query_params.get("model")
    index = candidates.index(wanted) if wanted in candidates else 0
    key = st.selectbox("Candidate", candidates, index=index)
    st.query_params["model"] = key

    checks = attempt(lambda: checklist(engine(), who, conf, key)) or []
    st.dataframe([{"check": c.name, "passed": c.passed, "detail": c.detail} for c in checks], hide_index=True)
    blocked_by = blocking(checks) if checks else ["checklist"]

    def forget_confirmation() -> None:
        st.session_state.pop("confirm_model", None)

    @st.dialog("Confirm promotion", on_dismiss=forget_confirmation)
    def confirm(model_key: str) -> None:
        st.write(f"Make **`{model_key}`** the active model for every client?")
        reason = st.text_area("Reason (required)", key="promote_reason")
        if st.button("Promote", type="primary", key="confirm_promote"):
            done = attempt(lambda: promote_as(engine(), reviewer(), settings(), model_key, reason))
            if done is not None:
                changed()
                forget_confirmation()
                st.session_state["promoted"] = model_key
                st.rerun()

    # The dialog stays open across reruns until promoted or dismissed.
    if st.button("Promote…", type="primary", disabled=bool(blocked_by) or not who.can_promote,
                 help="blocked by: " + ", ".join(blocked_by) if blocked_by else None):
        st.session_state["confirm_model"] = key
    if st.session_state.get("confirm_model") == key:
        confirm(key)
else:
    st.info("No candidate to promote: train one first.")

if st.session_state.pop("promoted", None):
    st.success(f"`{registry.active_model_key(engine())}` is now the active model.")

st.subheader("History")
history = promote.history(engine())
st.dataframe(history, hide_index=True)


def forget_rollback() -> None:
    st.session_state.pop("confirm_rollback", None)


@st.dialog("Confirm rollback", on_dismiss=forget_rollback)
def confirm_rollback() -> None:
    previous = history.iloc[0]["from_model_key"]
    st.write(f"Return to **`{previous}`**, the model active before the latest promotion?")
    reason = st.text_area("Reason (required)", key="rollback_reason")
    if st.button("Roll back", type="primary", key="confirm_rollback"):
        done = attempt(lambda: rollback_as(engine(), reviewer(), reason))
        if done is not None:
            changed()
            forget_rollback()
            st.session_state["promoted"] = done
            st.rerun()


if len(history) and history.iloc[0]["from_model_key"] and who.can_promote and st.button("Roll back…"):
    st.session_state["confirm_rollback"] = True
if st.session_state.get("confirm_rollback"):
    confirm_rollback()
