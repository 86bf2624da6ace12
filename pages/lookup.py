"""Score lookup: a listing's guarded live score, per-band explanation, candidate side by side."""

import altair as alt
import pandas as pd
import streamlit as st

from pages._ui import attempt, engine, seed
from woe_core import listings, registry, score
from woe_core.compare import short_labels
from woe_core.display import markdown_text
from woe_core.errors import CertificationRequired, WoeError

MAX_ID = 2**53 - 1
NONE = "(none)"

st.title("Score lookup")
raw = st.query_params.get("listing")
initial = 0
if raw is not None:  # checked on every run while the link holds it; it seeds the field only once
    try:
        initial = int(raw)
    except ValueError:
        initial = -1
    if not 0 <= initial <= MAX_ID:
        st.warning(
            f"listing {markdown_text(repr(raw))} in the link is not a valid listing id "
            f"(a positive integer up to {MAX_ID})"
        )
        initial = 0
seed("lookup_listing", initial)

models = registry.list_models(engine())
active = registry.active_model_key(engine())
others = [k for k in models["model_key"] if k != active]
labels = short_labels(list(models["model_key"]))
wanted = st.query_params.get("model")
seed("lookup_model", wanted if wanted in others else NONE)


def pick_listing(listing_id: int | None) -> None:
    if listing_id:
        st.session_state["lookup_listing"] = int(listing_id)
    st.session_state["lookup_pick"] = None  # the id field shows the choice; the pick list is ready again


newest = attempt(lambda: listings.newest(engine(), 10))
c1, c2, c3 = st.columns([1, 1, 2])
listing_id = c1.number_input("Listing id", min_value=0, max_value=MAX_ID, step=1, key="lookup_listing")
if newest is not None and len(newest):
    ids = [int(x) for x in newest["listing_id"]]
    c2.selectbox(
        "Or pick one of the newest listings",
        ids,
        index=None,
        placeholder="newest listings",
        key="lookup_pick",
        on_change=lambda: pick_listing(st.session_state.get("lookup_pick")),
    )
c2.button("Random listing", on_click=lambda: pick_listing(listings.random_listing(engine())))
candidate = c3.selectbox(
    "Also score under candidate",
    [NONE] + others,
    key="lookup_model",
    format_func=lambda k: k if k == NONE else f"{labels[k]} — {k}",
)

if listing_id:
    st.query_params["listing"] = str(int(listing_id))
else:
    st.query_params.pop("listing", None)
if candidate != NONE:
    st.query_params["model"] = candidate
else:
    st.query_params.pop("model", None)

if not listing_id:
    hint = (
        f" Listing ids here run from {int(newest['listing_id'].min()):,} upwards, e.g. "
        f"{int(newest['listing_id'].iloc[0])}."
        if newest is not None and len(newest)
        else ""
    )
    st.info("Enter a listing id, pick one of the newest, or draw a random one." + hint)
    st.stop()


def waterfall(parts: pd.DataFrame, base: float) -> alt.Chart:
    rows = [{"step": "base", "start": 0.0, "end": base, "woe": base, "value": "base_logit", "effect": "base logit"}]
    for r in parts.itertuples():
        effect = (
            "unmapped (contributes 0)"
            if r.unmapped
            else "raises p_slow21 (WOE > 0)"
            if r.woe > 0
            else "lowers p_slow21 (WOE ≤ 0)"
        )
        rows.append(
            {
                "step": r.band_name,
                "start": r.logit_after - r.woe,
                "end": r.logit_after,
                "woe": r.woe,
                "value": r.band_value + (" (unmapped: 0)" if r.unmapped else ""),
                "effect": effect,
            }
        )
    data = pd.DataFrame(rows)
    domain = ["base logit", "raises p_slow21 (WOE > 0)", "lowers p_slow21 (WOE ≤ 0)", "unmapped (contributes 0)"]
    return (
        alt.Chart(data)
        .mark_bar()
        .encode(
            y=alt.Y("step:N", sort=None, title=None),
            x=alt.X("start:Q", title="logit"),
            x2="end:Q",
            color=alt.Color(
                "effect:N",
                scale=alt.Scale(domain=domain, range=["#7f7f7f", "#d62728", "#2ca02c", "#bcbd22"]),
                legend=alt.Legend(title="bar", orient="bottom", labelLimit=300),
            ),
            tooltip=["step", "value", alt.Tooltip("woe:Q", format="+.4f"), alt.Tooltip("end:Q", format="+.4f")],
        )
    )


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
    cand = score.lookup(engine(), int(listing_id), model_key=candidate) if candidate != NONE else None
except CertificationRequired as exc:
    st.error(f"The database refused to score: {markdown_text(exc)}")
    st.info(
        "How to fix: certify the input data on the Certification page (or `python -m woe_core certify`); "
        "scores are served only while the latest certification passed, is younger than 24 h and the data "
        "has not changed since."
    )
    st.stop()
except WoeError as exc:
    st.error(markdown_text(exc))
    st.stop()

if live.empty:
    st.warning(
        f"Listing {int(listing_id)} has no snapshot in the feature store. Pick one of the newest listings "
        "above, draw a random one, or list some with `python -m woe_core listings`."
    )
    st.stop()

st.subheader(f"Snapshots of listing {int(listing_id)}")
st.dataframe(live[["t0", "generation", "woe_anchor_p_slow21", "woe_logit", "unmapped_bands"]], hide_index=True)
t0_labels = [f"{t:%Y-%m-%d %H:%M:%S}" for t in live["t0"]]
chosen = st.selectbox("Explain the snapshot at t0", t0_labels, index=len(t0_labels) - 1)
i = t0_labels.index(chosen)
cols = st.columns(2) if cand is not None else [st.container()]
show(live.iloc[i].to_dict(), "Active model", cols[0])
if cand is not None:
    show(cand.iloc[i].to_dict(), "Candidate", cols[1])
