"""Score lookup: a listing's guarded live score, per-band explanation, candidate side by side."""

import altair as alt
import pandas as pd
import streamlit as st

from pages._ui import engine
from woe_core import registry, score
from woe_core.display import markdown_text
from woe_core.errors import CertificationRequired, WoeError

st.title("Score lookup")
raw = st.query_params.get("listing", "0")
try:
    initial = int(raw)
except ValueError:
    initial = -1
if not 0 <= initial <= 2**53 - 1:
    st.warning(f"listing {markdown_text(repr(raw))} in the link is not a valid listing id (a positive integer)")
    initial = 0
c1, c2 = st.columns([1, 2])
listing_id = c1.number_input("Listing id", min_value=0, value=initial, step=1)
models = registry.list_models(engine())
active = registry.active_model_key(engine())
others = [k for k in models["model_key"] if k != active]
candidate = c2.selectbox("Also score under candidate", ["(none)"] + others,
                         index=(others.index(st.query_params["model"]) + 1)
                         if st.query_params.get("model") in others else 0)
if not listing_id:
    st.info("Enter a listing id.")
    st.stop()
st.query_params["listing"] = str(int(listing_id))


def waterfall(parts: pd.DataFrame, base: float) -> alt.Chart:
    rows = [{"step": "base", "start": 0.0, "end": base, "woe": base, "value": "base_logit", "unmapped": False}]
    for r in parts.itertuples():
        rows.append({"step": r.band_name, "start": r.logit_after - r.woe, "end": r.logit_after, "woe": r.woe,
                     "value": r.band_value + (" (unmapped: 0)" if r.unmapped else ""), "unmapped": r.unmapped})
    data = pd.DataFrame(rows)
    return alt.Chart(data).mark_bar().encode(
        y=alt.Y("step:N", sort=None, title=None), x=alt.X("start:Q", title="logit"), x2="end:Q",
        color=alt.condition("datum.woe >= 0", alt.value("#d62728"), alt.value("#2ca02c")),
        tooltip=["step", "value", alt.Tooltip("woe:Q", format="+.4f"), alt.Tooltip("end:Q", format="+.4f")])


def show(row: dict, title: str, column) -> None:
    column.subheader(title)
    parts = score.contributions(row)
    column.markdown(f"model `{row['model_key']}`")
    m1, m2 = column.columns(2)
    m1.metric("p_slow21", f"{row['woe_anchor_p_slow21']:.4f}")
    m2.metric("woe_logit", f"{row['woe_logit']:+.4f}")
    column.altair_chart(waterfall(parts, row["base_logit"]), width="stretch")
    column.dataframe(parts, hide_index=True)
    if row["unmapped_bands"]:
        column.caption("Unmapped (contribute 0): " + ", ".join(row["unmapped_bands"]))


try:
    live = score.lookup(engine(), int(listing_id))
    cand = score.lookup(engine(), int(listing_id), model_key=candidate) if candidate != "(none)" else None
except CertificationRequired as exc:
    st.error(f"The database refused to score: {markdown_text(exc)}")
    st.info("How to fix: certify the input data on the Certification page (or `python -m woe_core certify`); "
            "scores are served only while the latest certification passed, is younger than 24 h and the data "
            "has not changed since.")
    st.stop()
except WoeError as exc:
    st.error(markdown_text(exc))
    st.stop()

if live.empty:
    st.warning(f"Listing {int(listing_id)} has no snapshot in the feature store.")
    st.stop()

st.subheader(f"Snapshots of listing {int(listing_id)}")
st.dataframe(live[["t0", "generation", "woe_anchor_p_slow21", "woe_logit", "unmapped_bands"]], hide_index=True)
labels = [f"{t:%Y-%m-%d %H:%M:%S}" for t in live["t0"]]
chosen = st.selectbox("Explain the snapshot at t0", labels, index=len(labels) - 1)
i = labels.index(chosen)
cols = st.columns(2) if cand is not None else [st.container()]
show(live.iloc[i].to_dict(), "Active model", cols[0])
if cand is not None:
    show(cand.iloc[i].to_dict(), "Candidate", cols[1])
