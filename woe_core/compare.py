"""What the Compare page shows: models side by side, read from the registry and the maps.

Training stores every metric with its model (``registry.metrics``); nothing here
recomputes a model, it only reshapes what was stored for a reviewer.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from . import train
from .bands import BAND_NAMES, BAND_VALUES
from .contract import SOCIO_STORE
from .db import frame, woe_errors
from .errors import InvalidParameter, NotFound
from .metrics import scored_metrics
from .overview import EXACT_BELOW, planner_rows

SPREAD_FLAG = 0.5  # a fold spread (max - min WOE) above this is highlighted
COMPARE_WORK_MEM = "64MB"  # the window's sorts and hashes in memory, this transaction only


def _keys(keys: list[str]) -> list[str]:
    if not isinstance(keys, list | tuple) or not keys or not all(isinstance(k, str) and k for k in keys):
        raise InvalidParameter(f"models must be a non-empty list of model keys, got {keys!r}")
    return list(dict.fromkeys(keys))


def metrics(engine: Engine, keys: list[str]) -> dict[str, dict]:
    """The stored metrics document of each model, in the order given; unknown keys are named."""
    keys = _keys(keys)
    with engine.connect() as conn:
        rows: dict[str, Any] = dict(
            conn.execute(
                sa.text("SELECT model_key, metrics FROM ml.woe_anchor_model_registry_v1 WHERE model_key = ANY(:k)"),
                {"k": keys},
            ).all()
        )
    missing = [k for k in keys if k not in rows]
    if missing:
        raise NotFound(f"unknown model(s): {', '.join(repr(k) for k in missing)}")
    return {k: rows[k] if isinstance(rows[k], dict) else json.loads(rows[k]) for k in keys}


def summary(engine: Engine, keys: list[str]) -> pd.DataFrame:
    """One row per model: sizes, base rate and OOF / EVAL AUC, log loss and Brier score."""
    docs = metrics(engine, keys)
    with engine.connect() as conn:
        reg = frame(
            conn,
            sa.text(
                "SELECT model_key, is_active, created_at, created_by, train_cutoff_ts, half_life_days, eps, n_folds, "
                "base_rate FROM ml.woe_anchor_model_registry_v1 WHERE model_key = ANY(:k)"
            ),
            {"k": list(docs)},
        )
    reg = reg.set_index("model_key").loc[list(docs)].reset_index()
    for part in ("oof", "eval"):
        for m in ("auc", "log_loss", "brier"):
            reg[f"{part}_{m}"] = [docs[k].get(part, {}).get(m) for k in reg["model_key"]]
    reg["train_rows"] = [docs[k].get("counts", {}).get("train_rows") for k in reg["model_key"]]
    reg["eval_rows"] = [docs[k].get("counts", {}).get("eval_rows") for k in reg["model_key"]]
    return reg


def woe_tables(engine: Engine, keys: list[str]) -> pd.DataFrame:
    """Final WOE of every band value for each model side by side, with the weighted sums behind them.

    Columns: band_name, band_value, then per model ``woe[<key>]``, ``w_pos[<key>]``,
    ``w_neg[<key>]``, ``n[<key>]``, and for every model after the first
    ``delta[<key>]`` = its WOE minus the first model's. Values the schema lists
    but a model never saw have NaN WOE (they score 0).
    """
    keys = list(metrics(engine, keys))
    with engine.connect() as conn:
        m = frame(
            conn,
            sa.text(
                "SELECT model_key, band_name, band_value, woe, w_pos, w_neg, n_pos + n_neg AS n "
                "FROM ml.woe_anchor_map_v1 WHERE model_key = ANY(:k) AND fold_id IS NULL"
            ),
            {"k": keys},
        )
    grid = pd.DataFrame([(b, v) for b in BAND_NAMES for v in BAND_VALUES[b]], columns=["band_name", "band_value"])
    out = grid
    for key in keys:
        part = (
            m[m["model_key"] == key]
            .drop(columns="model_key")
            .rename(columns={c: f"{c}[{key}]" for c in ("woe", "w_pos", "w_neg", "n")})
        )
        out = out.merge(part, on=["band_name", "band_value"], how="left")
    for key in keys[1:]:
        out[f"delta[{key}]"] = out[f"woe[{key}]"] - out[f"woe[{keys[0]}]"]
    return out


def per_band(engine: Engine, keys: list[str], metric: str) -> pd.DataFrame:
    """Information value (``metric='information_value'``) or PSI (``'psi'``) per band and model."""
    if metric not in ("information_value", "psi"):
        raise InvalidParameter(f"metric must be 'information_value' or 'psi', got {metric!r}")
    docs = metrics(engine, keys)
    return pd.DataFrame(
        {k: [docs[k].get(metric, {}).get(b) for b in BAND_NAMES] for k in docs},
        index=pd.Index(BAND_NAMES, name="band_name"),
    ).reset_index()


def calibration(engine: Engine, keys: list[str], part: str = "eval") -> pd.DataFrame:
    """Long table model, decile, n, mean_predicted, observed_rate of the OOF or EVAL scores."""
    if part not in ("oof", "eval"):
        raise InvalidParameter(f"part must be 'oof' or 'eval', got {part!r}")
    docs = metrics(engine, keys)
    rows = [{"model_key": k, **c} for k, d in docs.items() for c in d.get(part, {}).get("calibration", [])]
    return pd.DataFrame(rows, columns=["model_key", "decile", "n", "mean_predicted", "observed_rate"])


def fold_stability(engine: Engine, key: str, spread_flag: float = SPREAD_FLAG) -> pd.DataFrame:
    """Per band value: WOE in each fold, mean, std, min, max, spread, sign flip and whether it is flagged."""
    doc = metrics(engine, [key])[key]
    rows = []
    for s in doc.get("fold_stability", []):
        row = {"band_name": s["band_name"], "band_value": s["band_value"]}
        row.update({f"fold {f}": w for f, w in sorted(s["woe_by_fold"].items(), key=lambda x: int(x[0]))})
        row.update(
            {
                "mean": s["mean"],
                "std": s["std"],
                "min": s["min"],
                "max": s["max"],
                "spread": s["max"] - s["min"],
                "sign_flip": s["sign_flip"],
            }
        )
        row["flagged"] = bool(s["sign_flip"] or row["spread"] > spread_flag)
        rows.append(row)
    return pd.DataFrame(rows)


# --- Like-for-like comparison on one common evaluation window --------------------------------


@dataclass(frozen=True)
class CommonWindow:
    """Metrics of several models on the same snapshots (``start <= t0 < end``), labelled as of ``asof``.

    ``metrics``: model_key, n, positives, auc, log_loss, brier; ``calibration``:
    model_key, decile, n, mean_predicted, observed_rate; ``histogram``: model_key,
    bin (1..metrics.HISTOGRAM_BINS), p_low, p_high, n.
    """

    start: datetime
    end: datetime
    asof: datetime
    metrics: pd.DataFrame
    calibration: pd.DataFrame
    histogram: pd.DataFrame

    def describe(self) -> str:
        n = int(self.metrics["n"].iloc[0]) if len(self.metrics) else 0
        return (
            f"snapshots with {self.start:%Y-%m-%d %H:%M} <= t0 < {self.end:%Y-%m-%d %H:%M} UTC, "
            f"labelled as of {self.asof:%Y-%m-%d %H:%M} UTC: {n:,} resolved rows, the same for every model"
        )


def default_window(
    engine: Engine, keys: list[str], data_range: tuple[datetime, datetime, datetime] | None = None
) -> tuple[datetime, datetime, datetime]:
    """(start, end, asof): after the latest cutoff among ``keys`` up to the data end, labelled at the data end.

    ``data_range``: ``train.data_window`` when the caller has it (it scans every snapshot).
    """
    keys = list(metrics(engine, keys))
    with engine.connect() as conn:
        start = conn.execute(
            sa.text("SELECT max(train_cutoff_ts) FROM ml.woe_anchor_model_registry_v1 WHERE model_key = ANY(:k)"),
            {"k": keys},
        ).scalar_one()
    t_min, t_max, data_end = data_range or train.data_window(engine)
    return start, t_max + timedelta(microseconds=1), data_end


def _window_rows_sql() -> str:
    label = train._LABEL.format(asof="CAST(:asof AS timestamptz)")  # the training label, as of the window's end
    return f"""
        SELECT b.model_key, b.listing_id, b.t0, b.woe_anchor_p_slow21 AS p, ({label})::int AS y
          FROM ml.woe_anchor_scores_by_model_train_v AS b
         WHERE b.model_key = ANY(:keys) AND b.t0 >= :start AND b.t0 < :end"""


def common_window_metrics(
    engine: Engine,
    keys: list[str],
    start: datetime | None = None,
    end: datetime | None = None,
    asof: datetime | None = None,
    data_range: tuple[datetime, datetime, datetime] | None = None,
) -> CommonWindow:
    """AUC, log loss, Brier, calibration and score histogram of each model on the same rows.

    Every model scores the snapshots with ``start <= t0 < end`` through the guarded
    live view ``ml.woe_anchor_scores_by_model_train_v``, labelled by the training
    label as of ``asof`` (rows still unresolved then are left out). Everything is
    aggregated in PostgreSQL by ``metrics.scored_metrics``, with the definitions of the
    metrics stored with every model (AUC with ties counting half, log loss with p
    clipped to [1e-15, 1 - 1e-15], Brier, calibration by decile of score, the
    histogram in ``metrics.HISTOGRAM_BINS`` equal bins of p). Defaults:
    ``default_window`` (``data_range`` as there). Raises CertificationRequired when the guard
    refuses. Its cost grows with the window's rows: see ``scores_on_visit``.
    """
    keys = list(metrics(engine, keys))
    d_start, d_end, d_asof = default_window(engine, keys, data_range)
    start, end, asof = start or d_start, end or d_end, asof or d_asof
    for name, value in (("start", start), ("end", end), ("asof", asof)):
        if not isinstance(value, datetime) or value.tzinfo is None:
            raise InvalidParameter(f"{name} must be a timezone-aware datetime, got {value!r}")
    if not start < end:
        raise InvalidParameter(f"the window must have start < end, got start={start!r}, end={end!r}")
    params = {"keys": keys, "start": start, "end": end, "asof": asof}
    source = f"SELECT array_position(CAST(:keys AS text[]), model_key) AS part, p, y FROM ({_window_rows_sql()}) AS x"
    with woe_errors(), engine.begin() as conn:  # the scored rows stay in the database
        conn.execute(sa.text(f"SET LOCAL work_mem = '{COMPARE_WORK_MEM}'"))
        scored = scored_metrics(conn, source, keys, params)
    found = scored.summary.set_index("part")
    summary_rows = pd.DataFrame(
        [
            {
                "model_key": k,
                "n": int(found.loc[k, "n"]) if k in found.index else 0,
                "positives": int(found.loc[k, "positives"]) if k in found.index else 0,
                "auc": float(found.loc[k, "auc"]) if k in found.index else np.nan,
                "log_loss": float(found.loc[k, "log_loss"]) if k in found.index else np.nan,
                "brier": float(found.loc[k, "brier"]) if k in found.index else np.nan,
            }
            for k in keys
        ]
    )
    cal = scored.calibration.rename(columns={"part": "model_key"})
    hist = scored.histogram.rename(columns={"part": "model_key"})[["model_key", "bin", "n", "p_low", "p_high"]]
    return CommonWindow(start, end, asof, summary_rows, cal, hist)


# Up to this many snapshots (the planner's estimate; the size where Home stops counting exactly),
# pages score the common window on every visit; above it, only when the reviewer asks, so that a
# page's cost does not grow with the data.
SCORE_ON_VISIT_BELOW = EXACT_BELOW


def scores_on_visit(engine: Engine) -> bool:
    """Whether the common window is small enough to score on every page visit (``SCORE_ON_VISIT_BELOW``)."""
    with engine.connect() as conn:
        return planner_rows(conn, f"SELECT 1 FROM {SOCIO_STORE}") < SCORE_ON_VISIT_BELOW


def short_labels(keys: list[str]) -> dict[str, str]:
    """A short, distinct label per model key: a letter and the key's time part ("A · 0128_0412").

    Keys look like ``tom_aft_v1_YYYYMMDD_HHMMSS[_n]``; the label keeps MMDD_HHMM
    (and a ``_n`` suffix), falling back to the key's last 12 characters. Letters go
    by sorted key, so the oldest model is A and a model keeps its letter on every page.
    """
    out = {}
    for i, key in enumerate(sorted(set(keys))):
        m = re.search(r"_(\d{8})_(\d{6})(_\d+)?$", key)
        tail = f"{m.group(1)[4:]}_{m.group(2)[:4]}{m.group(3) or ''}" if m else key[-12:]
        letter = chr(ord("A") + i) if i < 26 else str(i + 1)
        out[key] = f"{letter} · {tail}"
    return out
