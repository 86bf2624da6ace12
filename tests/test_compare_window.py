"""The common-window comparison against a slow reference computed here from the scored rows."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from numpy.testing import assert_allclose

from woe_core import compare, registry
from woe_core.errors import InvalidParameter
from woe_core.metrics import HISTOGRAM_BINS, P_CLIP


def _reference(engine, keys, start, end, asof) -> pd.DataFrame:
    with engine.connect() as conn:
        rows = pd.DataFrame(
            conn.execute(
                sa.text(
                    "SELECT model_key, listing_id, t0, sold_at, woe_anchor_p_slow21 AS p "
                    "FROM ml.woe_anchor_scores_by_model_train_v WHERE model_key = ANY(:k)"
                ),
                {"k": keys},
            )
            .mappings()
            .all()
        )
    rows = rows[(rows["t0"] >= start) & (rows["t0"] < end)].copy()
    due = rows["t0"] + timedelta(days=21)
    sold = rows["sold_at"]
    y = []
    for d, s in zip(due, sold, strict=True):
        if s is not None and not pd.isna(s) and s <= d and s <= asof:
            y.append(0)
        elif d <= asof and (s is None or pd.isna(s) or s > d):
            y.append(1)
        else:
            y.append(None)
    rows["y"] = y
    return rows[rows["y"].notna()].astype({"y": int})


def _pairwise_auc(p: np.ndarray, y: np.ndarray) -> float:
    pos, neg = p[y == 1], p[y == 0]
    wins = sum(float(a > b) + 0.5 * float(a == b) for a in pos for b in neg)
    return wins / (len(pos) * len(neg))


def calibration_reference(p: np.ndarray, y: np.ndarray) -> list[tuple[int, float, float]]:
    """(n, mean p, observed rate) per decile of the rows sorted by p, sized as numpy.array_split
    sizes them; rows tied on p count each tied label in proportion (a tie group of g rows with
    k positives contributes k/g positives per row), so no row order is assumed."""
    order = np.argsort(p, kind="stable")
    p, y = p[order], y[order].astype(float)
    share = y.copy()
    for value in np.unique(p):
        tied = p == value
        share[tied] = y[tied].mean()
    return [(len(i), p[i].mean(), share[i].mean()) for i in np.array_split(np.arange(len(p)), 10) if len(i)]


@pytest.mark.parametrize("window", ["default", "explicit"])
def test_common_window_matches_a_reference_from_the_rows(two_models, window):
    engine, first, second = two_models
    keys = [first, second]
    if window == "default":
        result = compare.common_window_metrics(engine, keys)
        start, end, asof = compare.default_window(engine, keys)
        assert (result.start, result.end, result.asof) == (start, end, asof)
        assert start == max(registry.list_models(engine)["train_cutoff_ts"])
    else:
        start, end = datetime(2026, 6, 1, tzinfo=UTC), datetime(2026, 9, 15, tzinfo=UTC)
        asof = datetime(2026, 10, 1, tzinfo=UTC)
        result = compare.common_window_metrics(engine, keys, start, end, asof)
    ref = _reference(engine, keys, start, end, asof)
    assert len(ref) > 50 and ref["p"].duplicated().any()  # ties occur and are averaged
    got = result.metrics.set_index("model_key")
    assert list(result.metrics["model_key"]) == keys
    for key in keys:
        r = ref[ref["model_key"] == key]
        p, y = r["p"].to_numpy(float), r["y"].to_numpy(int)
        q = np.clip(p, P_CLIP, 1 - P_CLIP)
        assert got.loc[key, "n"] == len(r) == len(ref) // 2  # the same rows for both models
        assert got.loc[key, "positives"] == y.sum()
        assert_allclose(got.loc[key, "auc"], _pairwise_auc(p, y), rtol=1e-12)
        assert_allclose(got.loc[key, "log_loss"], -np.mean(y * np.log(q) + (1 - y) * np.log(1 - q)), rtol=1e-10)
        assert_allclose(got.loc[key, "brier"], np.mean((p - y) ** 2), rtol=1e-10)
        cal = result.calibration[result.calibration["model_key"] == key].sort_values("decile")
        expected_cal = calibration_reference(p, y)
        assert_allclose(cal["n"].to_numpy(), [c[0] for c in expected_cal])
        assert_allclose(cal["mean_predicted"].to_numpy(), [c[1] for c in expected_cal], rtol=1e-10)
        assert_allclose(cal["observed_rate"].to_numpy(), [c[2] for c in expected_cal], rtol=1e-10)
        hist = result.histogram[result.histogram["model_key"] == key]
        bins = np.minimum(np.floor(p * HISTOGRAM_BINS).astype(int) + 1, HISTOGRAM_BINS)
        expected = pd.Series(bins).value_counts().sort_index()
        assert list(hist["bin"]) == list(expected.index) and list(hist["n"]) == list(expected.to_numpy())


def test_common_window_refuses_an_empty_window_and_unknown_models(two_models):
    engine, first, second = two_models
    t = datetime(2026, 8, 1, tzinfo=UTC)
    with pytest.raises(InvalidParameter, match="start < end"):
        compare.common_window_metrics(engine, [first], t, t)
    with pytest.raises(Exception, match="'nope'"):
        compare.common_window_metrics(engine, [first, "nope"])


def test_short_labels_tell_keys_of_the_same_day_apart():
    keys = ["tom_aft_v1_20261128_041200", "tom_aft_v1_20261128_041259", "tom_aft_v1_20261128_041259_2", "zz"]
    labels = compare.short_labels(keys[::-1])
    assert labels[keys[0]] == "A · 1128_0412" and labels[keys[2]] == "C · 1128_0412_2"
    assert len(set(labels.values())) == len(keys)
