"""Compare: two or more models, band by band, metric by metric, fold by fold, on a common window."""

from datetime import UTC, datetime, time, timedelta

import altair as alt
import pandas as pd
import streamlit as st

from pages._ui import attempt, data_range, engine, query_list, seed
from woe_core import compare, registry
from woe_core.bands import BAND_NAMES

st.title("Compare models")
models = registry.list_models(engine())
if models.empty:
    st.info("No models yet: train one on the Train page.")
    st.stop()

keys = list(models["model_key"])
labels = compare.short_labels(keys)
if "compare_models" not in st.session_state:
    wanted = [k for k in query_list("models") if k in keys]
    if not wanted:
        active = models.loc[models["is_active"], "model_key"].tolist()
        wanted = (active + [k for k in keys if k not in active])[:2]
    seed("compare_models", wanted)
chosen = st.multiselect(
    "Models (the first is the baseline for deltas)",
    keys,
    key="compare_models",
    format_func=lambda k: f"{labels[k]} — {k}",
)
if not chosen:
    st.query_params.pop("models", None)
    st.info("Choose at least one model.")
    st.stop()
st.query_params["models"] = ",".join(chosen)
names = [labels[k] for k in chosen]
st.caption("Models: " + " · ".join(f"**{labels[k]}** = `{k}`" for k in chosen))


def model_legend() -> alt.Legend:
    return alt.Legend(title="model", orient="bottom", labelLimit=400)


def model_color() -> alt.Color:
    return alt.Color("model:N", scale=alt.Scale(domain=names), legend=model_legend())


summary = attempt(lambda: compare.summary(engine(), chosen))
if summary is None:
    st.stop()

# --- The same rows for every model ---------------------------------------------------------
st.subheader("On a common evaluation window")
default = attempt(lambda: compare.default_window(engine(), chosen, data_range()))
if default is None:
    st.stop()
d_start, d_end, d_asof = default
custom = st.toggle(
    "Choose the window",
    key="compare_custom_window",
    help="By default: snapshots after the latest cutoff among the compared models, labelled as of the data end",
)
start, end = d_start, d_end
if custom:
    seed("compare_start", d_start.date())
    seed("compare_end", (d_end - timedelta(microseconds=1)).date())
    w1, w2 = st.columns(2)
    start_day = w1.date_input("From t0 (00:00 UTC)", key="compare_start")
    end_day = w2.date_input("To t0 (through the end of that day, UTC)", key="compare_end")
    start = datetime.combine(start_day, time(0), tzinfo=UTC)
    end = datetime.combine(end_day, time(0), tzinfo=UTC) + timedelta(days=1)
    if not start < end:
        st.error(f"The window's start {start_day!r} must come before its end {end_day!r}.")
        st.stop()


@st.cache_data(ttl=300, show_spinner="Scoring the common window in the database…")
def window_metrics(db: str, chosen_keys: tuple, w_start: datetime, w_end: datetime, asof: datetime):
    return compare.common_window_metrics(engine(), list(chosen_keys), w_start, w_end, asof)


# Small data: scored on every visit. Large data: on request, then kept for this window and these models.
wanted = (tuple(chosen), start, end, d_asof)
if compare.scores_on_visit(engine()) or st.session_state.get("compare_scored") == wanted:
    window = attempt(
        lambda: window_metrics(engine().url.render_as_string(hide_password=True), tuple(chosen), start, end, d_asof)
    )
else:
    window = None
    st.info(
        "Scoring every model on the common window reads every snapshot in it, so on data this size it runs "
        "only on request (it may take a while; the result is kept for 5 minutes)."
    )
    if st.button("Score the common window", key="compare_score_window"):
        st.session_state["compare_scored"] = wanted
        st.rerun()
if window is not None:
    st.caption("Every model scored through the live scoring SQL on the same " + window.describe() + ".")
    table = window.metrics.assign(model=[labels[k] for k in window.metrics["model_key"]])
    st.dataframe(
        table[["model", "n", "positives", "auc", "log_loss", "brier", "model_key"]],
        hide_index=True,
        column_config={
            "n": st.column_config.NumberColumn("rows", help="resolved snapshots in the window"),
            "model_key": st.column_config.TextColumn("full key"),
        },
    )
    c1, c2 = st.columns(2)
    cal = window.calibration.assign(model=[labels[k] for k in window.calibration["model_key"]])
    if not cal.empty:
        diagonal = (
            alt.Chart(pd.DataFrame({"p": [0.0, 1.0]}))
            .mark_line(strokeDash=[4, 4], color="gray")
            .encode(x="p:Q", y="p:Q")
        )
        lines = (
            alt.Chart(cal)
            .mark_line(point=True)
            .encode(
                x=alt.X("mean_predicted:Q", title="mean predicted p_slow21"),
                y=alt.Y("observed_rate:Q", title="observed slow21 rate"),
                color=model_color(),
                tooltip=["model", "model_key", "decile", "n", "mean_predicted", "observed_rate"],
            )
        )
        c1.markdown("**Calibration** (deciles of score)")
        c1.altair_chart(diagonal + lines, width="stretch")
    hist = window.histogram.assign(model=[labels[k] for k in window.histogram["model_key"]])
    if not hist.empty:
        c2.markdown("**Score distribution**")
        c2.altair_chart(
            alt.Chart(hist)
            .mark_line(point=True, interpolate="step-after")
            .encode(
                x=alt.X("p_low:Q", title="p_slow21 (bin start)"),
                y=alt.Y("n:Q", title="rows"),
                color=model_color(),
                tooltip=["model", "model_key", "p_low", "p_high", "n"],
            ),
            width="stretch",
        )

st.subheader("Stored metrics (each model on its own EVAL window)")
st.caption(
    "OOF and EVAL figures as stored at training; EVAL windows differ between models (see eval rows), "
    "so compare EVAL figures across models on the common window above."
)
summary = summary.assign(model=[labels[k] for k in summary["model_key"]])
st.dataframe(
    summary,
    hide_index=True,
    column_order=[
        "model",
        "is_active",
        "train_cutoff_ts",
        "half_life_days",
        "eps",
        "n_folds",
        "train_rows",
        "eval_rows",
        "oof_auc",
        "eval_auc",
    ],
    column_config={
        "is_active": st.column_config.CheckboxColumn("active", width="small"),
        "train_cutoff_ts": st.column_config.DatetimeColumn("cutoff", format="YYYY-MM-DD", width="small"),
        "half_life_days": st.column_config.NumberColumn("half-life", width="small"),
        "eps": st.column_config.NumberColumn(width="small"),
        "n_folds": st.column_config.NumberColumn("folds", width="small"),
        "train_rows": st.column_config.NumberColumn("train rows"),
        "eval_rows": st.column_config.NumberColumn("eval rows (own)", help="rows of this model's own EVAL window"),
        "oof_auc": st.column_config.NumberColumn(format="%.4f"),
        "eval_auc": st.column_config.NumberColumn(
            "eval_auc (own)", format="%.4f", help="AUC on this model's own EVAL window"
        ),
        "eval_log_loss": st.column_config.NumberColumn(format="%.4f"),
        "eval_brier": st.column_config.NumberColumn(format="%.4f"),
    },
)
st.caption("More columns (log loss, Brier, base rate, the full key) under the table's column menu.")

st.subheader("WOE by band")
tables = compare.woe_tables(engine(), chosen)
band = st.radio("Band", BAND_NAMES, horizontal=True, key="band")
part = tables[tables["band_name"] == band].drop(columns="band_name")
woe_cols = [f"woe[{k}]" for k in chosen] + [f"delta[{k}]" for k in chosen[1:]]
sum_cols = [c for c in part.columns if c not in woe_cols and c != "band_value"]


def short_columns(c: str) -> str:
    if c == "band_value":
        return c
    return ("Δ " if c.startswith("delta[") else c.split("[")[0] + " ") + labels[c[c.index("[") + 1 : -1]]


shown = part[["band_value"] + woe_cols].rename(columns=short_columns)
st.dataframe(
    shown,
    hide_index=True,
    column_config={c: st.column_config.NumberColumn(format="%+.4f") for c in shown.columns if c != "band_value"},
)
st.caption("Δ = the model's WOE minus the first model's. The weighted sums behind each WOE:")
st.dataframe(part[["band_value"] + sum_cols].rename(columns=short_columns), hide_index=True)
long = part.melt(
    id_vars="band_value", value_vars=[f"woe[{k}]" for k in chosen], var_name="model", value_name="woe"
).dropna()
long["model_key"] = long["model"].str[4:-1]
long["model"] = long["model_key"].map(labels)
st.altair_chart(
    alt.Chart(long)
    .mark_bar()
    .encode(
        x=alt.X("woe:Q"),
        y=alt.Y("band_value:N", sort=None),
        yOffset="model:N",
        color=model_color(),
        tooltip=["model", "model_key", "band_value", alt.Tooltip("woe:Q", format="+.3f")],
    ),
    width="stretch",
)

st.subheader("Information value and PSI (TRAIN vs EVAL) per band")
iv = compare.per_band(engine(), chosen, "information_value").set_index("band_name").rename(columns=labels)
psi = compare.per_band(engine(), chosen, "psi").set_index("band_name").rename(columns=labels)
st.dataframe(iv.add_prefix("IV ").join(psi.add_prefix("PSI ")).reset_index(), hide_index=True)

st.subheader("Fold stability")
which = st.selectbox("Model", chosen, key="compare_stability_model", format_func=lambda k: f"{labels[k]} — {k}")
stability = compare.fold_stability(engine(), which)
flagged = int(stability["flagged"].sum()) if not stability.empty else 0
st.caption(
    f"WOE of each fold model per band value; {flagged} value(s) highlighted "
    f"(sign flip between folds, or spread > {compare.SPREAD_FLAG}), listed first."
)
if not stability.empty:
    stability = stability.sort_values(["flagged", "spread"], ascending=[False, False])
    why = [
        ", ".join(([("sign flip")] if s else []) + ([f"spread {d:.2f}"] if d > compare.SPREAD_FLAG else []))
        for s, d in zip(stability["sign_flip"], stability["spread"], strict=True)
    ]
    stability = stability.drop(columns=["sign_flip", "flagged"]).assign(unstable=why)
    cols = ["band_name", "band_value", "unstable"] + [
        c for c in stability.columns if c not in ("band_name", "band_value", "unstable")
    ]
    stability = stability[cols]
    st.dataframe(
        stability.style.apply(
            lambda row: ["background-color: #fde2e1" if row["unstable"] else "" for _ in row], axis=1
        ).format(precision=4, subset=[c for c in cols if c not in ("band_name", "band_value", "unstable")]),
        hide_index=True,
    )
