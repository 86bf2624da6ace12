"""The WOE math (docs/model.md) on small aggregate arrays.

Training aggregates rows in PostgreSQL into weighted sums per (model, fold,
band value, label); everything here works on those sums, so its cost does not
grow with the number of snapshots. Per band value v, over the rows being
fitted::

    p        = ΣW1 / (ΣW1 + ΣW0)          base_logit = ln(p / (1 - p))
    woe(v)   = ln((W1(v) + eps·p) / (W0(v) + eps·(1 - p))) - base_logit

A value with no row among those being fitted gets no WOE (it scores 0).

Model k (0..K-1) is fitted on the rows outside fold k, the final model (index K)
on all rows. Sums are held densely as ``S[model, fold, level, stat]`` with stat
= (w1, w0, n1, n0) and ``level`` indexing the (band, value) pairs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

SUM_COLUMNS = ("w1", "w0", "n1", "n0")


@dataclass(frozen=True)
class Fit:
    """Base rates and WOE of the K fold models and the final model (index K)."""

    levels: list[tuple[str, str]]  # (band_name, band_value) per level index
    fitted: np.ndarray  # (K+1, L, 4) sums over the rows each model was fitted on
    p: np.ndarray  # (K+1,)
    base_logit: np.ndarray  # (K+1,)
    woe: np.ndarray  # (K+1, L), NaN where the model saw no row of that value

    def maps(self) -> pd.DataFrame:
        """model, band_name, band_value, woe, w1, w0, n1, n0 for every value each model saw."""
        model, level = np.nonzero(~np.isnan(self.woe))
        names = np.array(self.levels, dtype=object).reshape(-1, 2)
        return pd.DataFrame(
            {
                "model": model,
                "band_name": names[level, 0],
                "band_value": names[level, 1],
                "woe": self.woe[model, level],
                "w1": self.fitted[model, level, 0],
                "w0": self.fitted[model, level, 1],
                "n1": self.fitted[model, level, 2].astype(np.int64),
                "n0": self.fitted[model, level, 3].astype(np.int64),
            }
        )

    def bases(self) -> pd.DataFrame:
        return pd.DataFrame({"model": np.arange(len(self.p)), "base_rate": self.p, "base_logit": self.base_logit})


def fit(sums: np.ndarray, levels: list[tuple[str, str]], eps: float) -> Fit:
    """Fit every model from ``sums[model, fold, level, stat]`` (see module docstring)."""
    n_models, n_folds = sums.shape[0], sums.shape[1]
    fitted = np.empty((n_models, sums.shape[2], 4))
    for m in range(n_models):
        others = [f for f in range(n_folds) if f != m]
        fitted[m] = sums[m, others].sum(axis=0)
    first_band = np.array([band == levels[0][0] for band, _ in levels])
    w1_total = fitted[:, first_band, 0].sum(axis=1)
    w0_total = fitted[:, first_band, 1].sum(axis=1)
    # A model whose rows hold one class only gets p = 0 or 1 and infinite logits;
    # callers reject it (``train._check_fit``), so no warning is printed here.
    with np.errstate(divide="ignore", invalid="ignore"):
        p = w1_total / (w1_total + w0_total)
        base_logit = np.log(p / (1.0 - p))
        woe = (
            np.log((fitted[..., 0] + eps * p[:, None]) / (fitted[..., 1] + eps * (1.0 - p[:, None])))
            - base_logit[:, None]
        )
    woe[(fitted[..., 2] + fitted[..., 3]) == 0] = np.nan
    return Fit(levels, fitted, p, base_logit, woe)


def dense_sums(frame: pd.DataFrame, n_folds: int) -> tuple[np.ndarray, list[tuple[str, str]]]:
    """``S[model, fold, level, stat]`` from a long frame of (model, fold, band_name, band_value, w1, w0, n1, n0)."""
    keys = frame[["band_name", "band_value"]].drop_duplicates().sort_values(["band_name", "band_value"])
    levels = list(keys.itertuples(index=False, name=None))
    index = {lv: i for i, lv in enumerate(levels)}
    sums = np.zeros((n_folds + 1, n_folds, len(levels), 4))
    level_idx = np.array([index[lv] for lv in zip(frame["band_name"], frame["band_value"], strict=True)], dtype=int)
    np.add.at(
        sums,
        (frame["model"].to_numpy(int), frame["fold"].to_numpy(int), level_idx),
        frame[list(SUM_COLUMNS)].to_numpy(float),
    )
    return sums, levels
