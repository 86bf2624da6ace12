"""The WOE math of DESIGN §4 on small aggregate tables (and, for in-memory data, on rows).

Training aggregates rows in PostgreSQL into weighted sums per (fold, band, value,
label); everything here works on those sums, so its cost does not grow with the
number of snapshots. Per band value v, over the rows being fitted::

    p        = ΣW1 / (ΣW1 + ΣW0)          base_logit = ln(p / (1 - p))
    woe(v)   = ln((W1(v) + eps·p) / (W0(v) + eps·(1 - p))) - base_logit

A value with no row among those being fitted gets no WOE (it scores 0).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

SUM_COLUMNS = ("w1", "w0", "n1", "n0")


def base_rate(w1_total: float, w0_total: float) -> tuple[float, float]:
    """(p, base_logit) of the weighted positives and negatives being fitted."""
    p = w1_total / (w1_total + w0_total)
    return p, float(np.log(p / (1.0 - p)))


def woe(w1: np.ndarray, w0: np.ndarray, p: float, base_logit: float, eps: float) -> np.ndarray:
    """Smoothed WOE per value: eps is a pseudo-count of weight spread at the base rate."""
    return np.log((w1 + eps * p) / (w0 + eps * (1.0 - p))) - base_logit


def fit_maps(sums: pd.DataFrame, n_folds: int, eps: float) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Final and per-fold maps from TRAIN sums.

    ``sums`` has one row per (model, fold, band_name, band_value) with the
    weighted sums ``w1, w0`` and row counts ``n1, n0`` of the TRAIN rows of
    ``fold`` banded as ``model`` bands them; ``model`` is 0..K-1 for the fold
    models and K for the final one (only the presentation band differs between
    models, because each model has its own cuts). Model k is fitted on the rows
    outside fold k, the final model on all rows.

    Returns (bases, maps): bases has model, base_rate, base_logit, w1, w0, n;
    maps has model, band_name, band_value, woe, w1, w0, n1, n0.
    """
    bases, maps = [], []
    for model in range(n_folds + 1):
        fitted = sums[(sums["model"] == model) & (sums["fold"] != model)]
        per_value = fitted.groupby(["band_name", "band_value"], as_index=False, sort=True)[list(SUM_COLUMNS)].sum()
        per_value = per_value[(per_value["n1"] + per_value["n0"]) > 0]
        # Every band partitions the same rows: take the totals from one band.
        first_band = per_value["band_name"].iloc[0]
        totals = per_value[per_value["band_name"] == first_band]
        w1_total, w0_total = float(totals["w1"].sum()), float(totals["w0"].sum())
        p, base_logit = base_rate(w1_total, w0_total)
        per_value = per_value.assign(
            model=model, woe=woe(per_value["w1"].to_numpy(), per_value["w0"].to_numpy(), p, base_logit, eps))
        bases.append({"model": model, "base_rate": p, "base_logit": base_logit, "w1": w1_total, "w0": w0_total,
                      "n": int(totals["n1"].sum() + totals["n0"].sum())})
        maps.append(per_value)
    return pd.DataFrame(bases), pd.concat(maps, ignore_index=True)


def fold_sums(codes: dict[str, np.ndarray], fold: np.ndarray, y: np.ndarray, w: np.ndarray,
              levels: dict[str, list[str]], n_folds: int) -> pd.DataFrame:
    """In-memory counterpart of the training aggregate: one weighted ``bincount`` per band.

    ``codes[band]`` holds each row's value index into ``levels[band]``. Returns the
    sums frame that ``fit_maps`` takes, with the same values for every model
    (in memory there is no per-fold presentation re-banding).
    """
    frames = []
    for band, code in codes.items():
        n_levels = len(levels[band])
        key = (fold * n_levels + code) * 2 + y
        size = n_folds * n_levels * 2
        wsum = np.bincount(key, weights=w, minlength=size).reshape(n_folds, n_levels, 2)
        nsum = np.bincount(key, minlength=size).reshape(n_folds, n_levels, 2)
        f_idx, l_idx = np.meshgrid(np.arange(n_folds), np.arange(n_levels), indexing="ij")
        frames.append(pd.DataFrame({
            "fold": f_idx.ravel(), "band_name": band, "band_value": np.asarray(levels[band])[l_idx.ravel()],
            "w1": wsum[..., 1].ravel(), "w0": wsum[..., 0].ravel(),
            "n1": nsum[..., 1].ravel(), "n0": nsum[..., 0].ravel()}))
    one = pd.concat(frames, ignore_index=True)
    return pd.concat([one.assign(model=m) for m in range(n_folds + 1)], ignore_index=True)
