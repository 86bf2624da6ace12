"""Model metrics stored with every model (the Compare page only reads them).

All functions take plain numpy arrays of predicted probabilities ``p`` and 0/1
labels ``y``; AUC, log loss, Brier score and calibration are unweighted (every
resolved snapshot counts once), so OOF and EVAL figures are comparable.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

P_CLIP = 1e-15


def auc(p: np.ndarray, y: np.ndarray) -> float | None:
    """Area under the ROC curve (Mann–Whitney with average ranks for ties); None with one class."""
    y = np.asarray(y, dtype=bool)
    n1 = int(y.sum())
    n0 = len(y) - n1
    if n1 == 0 or n0 == 0:
        return None
    ranks = pd.Series(np.asarray(p)).rank(method="average").to_numpy()
    return float((ranks[y].sum() - n1 * (n1 + 1) / 2.0) / (n1 * n0))


def log_loss(p: np.ndarray, y: np.ndarray) -> float | None:
    if len(y) == 0:
        return None
    q = np.clip(np.asarray(p, dtype=float), P_CLIP, 1 - P_CLIP)
    return float(-np.mean(y * np.log(q) + (1 - y) * np.log(1 - q)))


def brier(p: np.ndarray, y: np.ndarray) -> float | None:
    return float(np.mean((np.asarray(p) - y) ** 2)) if len(y) else None


def calibration(p: np.ndarray, y: np.ndarray, bins: int = 10) -> list[dict]:
    """Mean predicted vs observed rate per decile of the predicted probability."""
    if len(y) == 0:
        return []
    order = np.argsort(p, kind="stable")
    out = []
    for i, idx in enumerate(np.array_split(order, bins)):
        if len(idx):
            out.append(
                {
                    "decile": i + 1,
                    "n": int(len(idx)),
                    "mean_predicted": float(np.mean(p[idx])),
                    "observed_rate": float(np.mean(y[idx])),
                }
            )
    return out


def summary(p: np.ndarray, y: np.ndarray) -> dict:
    """AUC, log loss, Brier score, base rate and row count of one scored set."""
    y = np.asarray(y, dtype=float)
    return {
        "n": int(len(y)),
        "positive_rate": float(y.mean()) if len(y) else None,
        "auc": auc(p, y),
        "log_loss": log_loss(p, y),
        "brier": brier(p, y),
        "calibration": calibration(np.asarray(p), y),
    }


def information_value(final_map: pd.DataFrame) -> dict[str, float]:
    """IV per band: Σ_v (W1(v)/ΣW1 − W0(v)/ΣW0) · woe(v), with the stored (smoothed) WOE."""
    out = {}
    for band, g in final_map.groupby("band_name"):
        d1 = g["w1"] / g["w1"].sum()
        d0 = g["w0"] / g["w0"].sum()
        out[str(band)] = float(((d1 - d0) * g["woe"]).sum())
    return out


def fold_stability(maps: pd.DataFrame, n_folds: int) -> list[dict]:
    """Per band value: WOE of each fold model, mean, std, min, max and whether its sign flips."""
    folds = maps[maps["model"] < n_folds]
    out = []
    for (band, value), g in folds.groupby(["band_name", "band_value"], sort=True):
        by_fold = {int(m): float(w) for m, w in zip(g["model"], g["woe"], strict=True)}
        values = np.array(list(by_fold.values()))
        out.append(
            {
                "band_name": band,
                "band_value": value,
                "woe_by_fold": by_fold,
                "n_folds": len(values),
                "mean": float(values.mean()),
                "std": float(values.std(ddof=0)),
                "min": float(values.min()),
                "max": float(values.max()),
                "sign_flip": bool((values > 0).any() and (values < 0).any()),
            }
        )
    return out


def psi(expected_counts: dict[str, float], actual_counts: dict[str, float], floor: float = 1e-4) -> float | None:
    """Population stability index of one band between TRAIN (expected) and EVAL (actual) row shares."""
    values = sorted(set(expected_counts) | set(actual_counts))
    e = np.array([expected_counts.get(v, 0.0) for v in values], dtype=float)
    a = np.array([actual_counts.get(v, 0.0) for v in values], dtype=float)
    if e.sum() == 0 or a.sum() == 0:
        return None
    e = np.maximum(e / e.sum(), floor)
    a = np.maximum(a / a.sum(), floor)
    return float(np.sum((a - e) * np.log(a / e)))
