"""Certification: latest status, checks, history, certify now, and code hashes of every model."""

import pandas as pd
import streamlit as st

from pages._ui import after_action, attempt, engine, reviewer, show_flash
from woe_core import certify, registry, train
from woe_core.display import markdown_text

st.title("Data certification")
show_flash()
for dataset in certify.CERTIFIABLE:
    st.subheader(dataset)
    status = certify.status(engine(), dataset)
    if status.latest is None:
        st.error("Never certified: live scores and training are refused.")
    else:
        latest = status.latest
        hours = status.age.total_seconds() / 3600
        line = (
            f"#{latest.certification_id} by {markdown_text(latest.certified_by)}, {hours:.1f} h ago · "
            f"{latest.row_count or 0:,} rows · sha256 `{latest.dataset_sha256}`"
        )
        (st.success if status.fresh else st.error)(
            ("Fresh: " if status.fresh else f"Refused ({markdown_text(status.reason)}): ") + line
        )
        st.dataframe(pd.DataFrame([c.__dict__ for c in latest.checks]), hide_index=True)
    if st.button("Certify now", key=f"certify-{dataset}", type="primary"):
        who = reviewer().name
        if not who:
            st.error("Sign in to certify: every certification records who ran it.")
        with st.spinner("Running checks and hashing…"):
            result = attempt(lambda d=dataset, w=who: certify.certify(engine(), w, d)) if who else None
        if result is not None:  # redraw the whole page on the new certification, the result on top
            after_action("success" if result.passed else "error", f"{dataset}: {result.summary()}")
    with st.expander("History"):
        rows = [
            {
                "id": c.certification_id,
                "certified_at": c.certified_at,
                "by": c.certified_by,
                "passed": c.passed,
                "rows": c.row_count,
                "sha256": c.dataset_sha256,
                "failed checks": ", ".join(f.name for f in c.failed_checks),
            }
            for c in certify.history(engine(), dataset)
        ]
        st.dataframe(pd.DataFrame(rows), hide_index=True)

st.subheader("Training code of each model")
current = train.code_sha256()
st.caption(f"Current training code sha256 `{current}` (files: {', '.join(train.TRAINING_CODE_FILES)}).")
models = registry.list_models(engine())
if models.empty:
    st.write("No models.")
else:
    table = models[["model_key", "is_active", "created_at"]].assign(
        same_code=models["code_sha256"] == current, code_sha256=models["code_sha256"]
    )
    st.dataframe(
        table.style.apply(lambda row: ["" if row["same_code"] else "background-color: #fff3cd" for _ in row], axis=1),
        hide_index=True,
        column_config={"code_sha256": st.column_config.TextColumn(width="medium", help="full hash on hover")},
    )
    other = int((~table["same_code"]).sum())
    if other:
        st.warning(f"{other} model(s) were trained by different code than the current one.")
