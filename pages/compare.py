"""Compare: two or more models, band by band, metric by metric, fold by fold."""

import altair as alt
import pandas as pd
import streamlit as st

from pages._ui import attempt, engine, query_list
from woe_core import compare, registry
from woe_core.bands import BAND_NAMES

st.title("Compare models")
models = registry.list_models(engine())
if models.empty:
    st.info("No models yet: train one on the Train page.")
    st.stop()

keys = list(models["model_key"])
wanted = [k for k in query_list("models") if k in keys]
if not wanted:
    active = models.loc[models["is_active"], "model_key"].tolist()
    wanted = (active + [k for k in keys if k not in active])[:2]
chosen = st.multiselect("Models (the first is the baseline for deltas)", keys, default=wanted)
if not chosen:
    st.stop()
st.query_params["models"] = ",".join(chosen)

summary = attempt(lambda: compare.summary(engine(), chosen))
if summary is None:
    st.stop()
st.subheader("Metrics")
st.dataframe(summary[["model_key", "is_active", "train_cutoff_ts", "half_life_days", "eps", "n_folds", "train_rows",
                      "eval_rows", "base_rate", "oof_auc", "eval_auc", "oof_log_loss", "eval_log_loss", "oof_brier",
                      "eval_brier"]], hide_index=True)

st.subheader("WOE by band")
tables = compare.woe_tables(engine(), chosen)
band = st.radio("Band", BAND_NAMES, horizontal=True, key="band")
part = tables[tables["band_name"] == band].drop(columns="band_name")
st.dataframe(part, hide_index=True)
long = part.melt(id_vars="band_value", value_vars=[f"woe[{k}]" for k in chosen], var_name="model",
                 value_name="woe").dropna()
long["model"] = long["model"].str[4:-1]
st.altair_chart(alt.Chart(long).mark_bar().encode(
    x=alt.X("woe:Q"), y=alt.Y("band_value:N", sort=None), yOffset="model:N", color="model:N",
    tooltip=["model", "band_value", alt.Tooltip("woe:Q", format="+.3f")]), width="stretch")

st.subheader("Information value and PSI (TRAIN vs EVAL) per band")
iv = compare.per_band(engine(), chosen, "information_value").set_index("band_name").add_prefix("IV ")
psi = compare.per_band(engine(), chosen, "psi").set_index("band_name").add_prefix("PSI ")
st.dataframe(iv.join(psi).reset_index())

st.subheader("Calibration (EVAL, deciles of predicted p)")
cal = compare.calibration(engine(), chosen, "eval")
if cal.empty:
    st.write("No EVAL rows.")
else:
    diagonal = alt.Chart(pd.DataFrame({"p": [0.0, 1.0]})).mark_line(strokeDash=[4, 4], color="gray").encode(
        x="p:Q", y="p:Q")
    lines = alt.Chart(cal).mark_line(point=True).encode(
        x=alt.X("mean_predicted:Q", title="mean predicted p_slow21"),
        y=alt.Y("observed_rate:Q", title="observed slow21 rate"), color="model_key:N",
        tooltip=["model_key", "decile", "n", "mean_predicted", "observed_rate"])
    st.altair_chart(diagonal + lines, width="stretch")

st.subheader("Fold stability")
which = st.selectbox("Model", chosen)
stability = compare.fold_stability(engine(), which)
flagged = int(stability["flagged"].sum()) if not stability.empty else 0
st.caption(f"WOE of each fold model per band value; {flagged} value(s) flagged "
           f"(sign flips between folds, or spread > {compare.SPREAD_FLAG}).")
if not stability.empty:
    # Flagged values first; the "flagged" column says why (sign flip or spread).
    st.dataframe(stability.sort_values(["flagged", "spread"], ascending=[False, False]), hide_index=True)
