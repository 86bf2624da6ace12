"""Train: set the hyperparameters, start a run, watch it, see the new candidate's metrics."""

from datetime import UTC, datetime, time

import streamlit as st

from pages._ui import attempt, changed, data_range, engine, reviewer
from woe_core import jobs, registry, train
from woe_core.bands import DEFAULT_DSOLD_THRESHOLDS
from woe_core.display import markdown_text

st.title("Train a candidate")
window = attempt(data_range)
if window is None:
    st.stop()
t_min, t_max, data_end = window
default = train.default_cutoff(t_min, t_max)
st.caption(
    f"Data: t0 from {t_min:%Y-%m-%d} to {t_max:%Y-%m-%d}; the cutoff must lie in between. "
    "Training needs a certification younger than 24 h."
)

with st.form("train"):
    c1, c2 = st.columns(2)
    # No min/max here: a date outside the range must reach the check below, not be swapped for the default.
    cutoff_day = c1.date_input(
        "Cutoff (train_cutoff_ts, 00:00 UTC)",
        value=default.date(),
        min_value=datetime(2000, 1, 1).date(),
        max_value=datetime(2100, 12, 31).date(),
        help=f"from {t_min:%Y-%m-%d} to {t_max:%Y-%m-%d}; TRAIN = snapshots before the "
        "cutoff, labelled as of it; EVAL = the rest",
    )
    half_life = c2.number_input(
        "Half-life (days, > 0)",
        min_value=0.1,
        value=float(train.TrainParams.half_life_days),
        help="weight = 0.5 ** (days before the cutoff / half-life)",
    )
    eps = c1.number_input(
        "eps (> 0, pseudo-count of weight)", min_value=0.0001, value=float(train.TrainParams.eps), format="%.4f"
    )
    folds = c2.number_input(
        "Folds (2 to 50)", min_value=2, max_value=train.MAX_FOLDS, value=train.TrainParams.n_folds, step=1
    )
    st.markdown("**dsold thresholds** (strictly increasing; bands of (price − 30-day sold median) / median)")
    tcols = st.columns(4)
    thresholds = tuple(
        col.number_input(f"t{i + 1}", value=float(v), step=0.01, format="%.3f")
        for i, (col, v) in enumerate(zip(tcols, DEFAULT_DSOLD_THRESHOLDS, strict=True))
    )
    submitted = st.form_submit_button("Train candidate", type="primary")

if submitted:
    params = train.TrainParams(
        datetime.combine(cutoff_day, time(0), tzinfo=UTC), float(half_life), float(eps), int(folds), thresholds
    )
    who = reviewer()
    job = attempt(lambda: jobs.RUNNER.start(engine(), params, who.name)) if who.name else None
    if not who.name:
        st.error("Sign in to train: every model records who trained it.")
    if job is not None:
        st.session_state["train_job"] = job.job_id
    else:
        st.caption("Nothing was trained: " + jobs.describe_params(params))


@st.fragment(run_every=1.0)
def show_job() -> None:
    job_id = st.session_state.get("train_job")
    job = jobs.RUNNER.get(job_id) if job_id else None
    if job is None:
        return
    used = jobs.describe_params(job.params)
    if job.status == "running":
        st.progress(job.fraction, text=f"Run #{job.job_id}: {job.step}… ({used})")
        return
    if job.status == "failed":
        st.error(f"Run #{job.job_id} failed: {markdown_text(job.error)} ({used})")
        return
    if st.session_state.get("train_seen") != job.job_id:
        st.session_state["train_seen"] = job.job_id
        changed()
    st.success(f"Run #{job.job_id} done: {job.summary}")
    st.caption(f"Trained with {used}.")
    active = registry.active_model_key(engine())
    with st.container(border=True):
        st.markdown("**Next**")
        if active:
            st.page_link(
                "pages/compare.py",
                label="Compare with the active model",
                icon=":material/compare_arrows:",
                query_params={"models": f"{active},{job.model_key}"},
            )
        else:
            st.page_link(
                "pages/compare.py",
                label="Inspect this candidate (no model is active yet)",
                icon=":material/compare_arrows:",
                query_params={"models": job.model_key},
            )
        st.page_link(
            "pages/promote.py",
            label="Promote this candidate",
            icon=":material/rocket_launch:",
            query_params={"model": job.model_key},
        )


show_job()
