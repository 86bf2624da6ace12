"""What the Compare page shows: models side by side, read from the registry and the maps.

Training stores every metric with its model (``registry.metrics``); nothing here
recomputes a model, it only reshapes what was stored for a reviewer.
"""

from __future__ import annotations

import json
from typing import Any

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from .bands import BAND_NAMES, BAND_VALUES
from .db import frame
from .errors import InvalidParameter, NotFound

SPREAD_FLAG = 0.5  # a fold spread (max - min WOE) above this is highlighted


def _keys(keys: list[str]) -> list[str]:
    if not isinstance(keys, list | tuple) or not keys or not all(isinstance(k, str) and k for k in keys):
        raise InvalidParameter(f"models must be a non-empty list of model keys, got {keys!r}")
    return list(dict.fromkeys(keys))


def metrics(engine: Engine, keys: list[str]) -> dict[str, dict]:
    """The stored metrics document of each model, in the order given; unknown keys are named."""
    keys = _keys(keys)
    with engine.connect() as conn:
        rows: dict[str, Any] = dict(conn.execute(sa.text(
            "SELECT model_key, metrics FROM ml.woe_anchor_model_registry_v1 WHERE model_key = ANY(:k)"),
            {"k": keys}).all())
    missing = [k for k in keys if k not in rows]
    if missing:
        raise NotFound(f"unknown model(s): {', '.join(repr(k) for k in missing)}")
    return {k: rows[k] if isinstance(rows[k], dict) else json.loads(rows[k]) for k in keys}


def summary(engine: Engine, keys: list[str]) -> pd.DataFrame:
    """One row per model: sizes, base rate and OOF / EVAL AUC, log loss and Brier score."""
    docs = metrics(engine, keys)
    with engine.connect() as conn:
        reg = frame(conn, sa.text(
            "SELECT model_key, is_active, created_at, created_by, train_cutoff_ts, half_life_days, eps, n_folds, "
            "base_rate FROM ml.woe_anchor_model_registry_v1 WHERE model_key = ANY(:k)"), {"k": list(docs)})
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
        m = frame(conn, sa.text(
            "SELECT model_key, band_name, band_value, woe, w_pos, w_neg, n_pos + n_neg AS n "
            "FROM ml.woe_anchor_map_v1 WHERE model_key = ANY(:k) AND fold_id IS NULL"), {"k": keys})
    grid = pd.DataFrame([(b, v) for b in BAND_NAMES for v in BAND_VALUES[b]], columns=["band_name", "band_value"])
    out = grid
    for key in keys:
        part = m[m["model_key"] == key].drop(columns="model_key").rename(
            columns={c: f"{c}[{key}]" for c in ("woe", "w_pos", "w_neg", "n")})
        out = out.merge(part, on=["band_name", "band_value"], how="left")
    for key in keys[1:]:
        out[f"delta[{key}]"] = out[f"woe[{key}]"] - out[f"woe[{keys[0]}]"]
    return out


def per_band(engine: Engine, keys: list[str], metric: str) -> pd.DataFrame:
    """Information value (``metric='information_value'``) or PSI (``'psi'``) per band and model."""
    if metric not in ("information_value", "psi"):
        raise InvalidParameter(f"metric must be 'information_value' or 'psi', got {metric!r}")
    docs = metrics(engine, keys)
    return pd.DataFrame({k: [docs[k].get(metric, {}).get(b) for b in BAND_NAMES] for k in docs},
                        index=pd.Index(BAND_NAMES, name="band_name")).reset_index()


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
        row.update({"mean": s["mean"], "std": s["std"], "min": s["min"], "max": s["max"],
                    "spread": s["max"] - s["min"], "sign_flip": s["sign_flip"]})
        row["flagged"] = bool(s["sign_flip"] or row["spread"] > spread_flag)
        rows.append(row)
    return pd.DataFrame(rows)
