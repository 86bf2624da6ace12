"""Home: active model, candidates, certification freshness, database in use."""

import streamlit as st

from pages._ui import engine, reviewer
from woe_core import overview, promote, registry
from woe_core.display import markdown_text

info = overview.overview(engine())  # every read bounded: exact counts when small, else planner estimates
who = reviewer()
st.title("WOE anchor model — p_slow21")

db_info = info.database
where = "embedded PostgreSQL" if db_info.kind == "embedded" else f"server {db_info.location}"
mode = "local mode (no identity provider)" if who.mode == "local" else "signed in via OIDC"
st.caption(
    f"Database: {where} · PostgreSQL {db_info.server_version} · Reviewer: {markdown_text(who.name or 'not signed in')}, {mode}"
)

c1, c2, c3, c4 = st.columns(4)
counts = info.counts
c1.metric("Snapshots", counts.show("snapshots"))
c2.metric("Listings", counts.show("listings"))
c3.metric("Image rows", counts.show("image_rows"))
c4.metric("Models", f"{info.models:,}")
if counts.exact:
    st.caption(f"Exact row counts at {counts.counted_at:%H:%M:%S} UTC.")
else:
    st.caption(
        f"≈: the planner's estimates from the table statistics at {counts.counted_at:%H:%M:%S} UTC, read without "
        f"scanning (stores above {overview.EXACT_BELOW:,} rows are not counted on every visit; the distinct "
        "listings estimate is the roughest: about 25% low on the demo data; – until the first ANALYZE)."
        + (
            " Snapshots: exact, the row count of the latest certification (data unchanged since)."
            if counts.snapshots_exact
            else ""
        )
    )

st.subheader("Input data certification")
cert = info.certification
if cert.fresh:
    hours = cert.age.total_seconds() / 3600
    text = (
        f"Certified {hours:.1f} h ago (limit 24 h) by {markdown_text(cert.latest.certified_by)}: "
        f"{cert.latest.row_count:,} rows, sha256 `{cert.latest.dataset_sha256}`"
    )
    (st.warning if hours >= 20 else st.success)(text + (" — renew soon." if hours >= 20 else ""))
else:
    st.error(
        f"Live scores are refused: {cert.reason}. Certify on the Certification page "
        "or with `python -m woe_core certify`."
    )

st.subheader("Active model")
if info.active_model:
    last = promote.history(engine(), limit=1)
    since = last.iloc[0] if len(last) else None
    detail = (
        f" — active since {since['promoted_at']:%Y-%m-%d %H:%M UTC}, promoted by {markdown_text(since['actor'])}"
        if since is not None
        else ""
    )
    st.markdown(f"**`{info.active_model}`**{detail}")
else:
    st.info("No model is active yet: train a candidate and promote it.")

st.subheader("Candidates")
models = registry.list_models(engine())
candidates = models[~models["is_active"]]
if candidates.empty:
    st.write("No candidates.")
else:
    st.dataframe(
        candidates[["model_key", "created_at", "created_by", "train_cutoff_ts", "n_folds", "oof_auc", "eval_auc"]],
        hide_index=True,
    )
