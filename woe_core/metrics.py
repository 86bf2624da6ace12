"""Model metrics stored with every model, and the like-for-like metrics of the Compare page.

Scored rows never leave PostgreSQL: ``scored_metrics`` aggregates them there, by
distinct predicted probability, into AUC, log loss, Brier score, calibration by
decile and a histogram of p, so the client's memory does not grow with the number
of rows. AUC, log loss, Brier score and calibration are unweighted (every resolved
snapshot counts once), so OOF and EVAL figures are comparable. Definitions, over
the n rows of one part (a model, or OOF / EVAL), sorted by p:

* AUC: the Mann–Whitney statistic, a tie between a positive and a negative counting
  half (average ranks); None with one class.
* log loss: the mean of ``-(y ln q + (1 - y) ln(1 - q))``, q = p clipped to
  [1e-15, 1 - 1e-15]. Brier: the mean of ``(p - y)^2``.
* calibration: the sorted rows split into 10 parts of sizes as ``numpy.array_split``
  gives them (the first ``n mod 10`` one row larger; empty parts left out); per part,
  its row count, mean p and observed rate. Rows tied on p that straddle a boundary
  are shared in proportion: a part holding j of a tie group of g rows with k
  positives counts j·k/g positives, so the result does not depend on row order.
* histogram: row counts in HISTOGRAM_BINS equal bins of p over [0, 1].

Rows are counted per distinct p in 32-bit integers (sums of them are 64-bit): fewer
than 2^31 rows of a part may share one p.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Connection

P_CLIP = 1e-15
HISTOGRAM_BINS = 20

# Each source's rows are counted per (part, p) on their own, and only those counts are put
# together (and added up, should two sources share a part): on Citus each count runs on the
# shards and only distinct p travel.
_COUNT_BY_P = """
    SELECT part, p, (count(*) FILTER (WHERE y = 1))::int4 AS pos, (count(*) FILTER (WHERE y = 0))::int4 AS neg
      FROM ({source}) AS scored
     WHERE y IN (0, 1)
     GROUP BY 1, p"""

_SCORED_METRICS_SQL = """
WITH g AS (
    SELECT part, p, sum(pos)::int4 AS pos, sum(neg)::int4 AS neg
      FROM ({counts}) AS c
     GROUP BY part, p),
-- per distinct p in order: the rows and negatives before it and its part's size, from one sort
w AS (
    SELECT part, p, pos, neg, pos + neg AS n,
           coalesce(sum(pos + neg) OVER below, 0) AS before,
           coalesce(sum(neg) OVER below, 0) AS neg_below,
           sum(pos + neg) OVER whole AS total
      FROM g
    WINDOW below AS (PARTITION BY part ORDER BY p ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING),
           whole AS (PARTITION BY part)),
-- decile d (0-based) holds the sorted rows [lo(d), lo(d) + q + (d < rem)), lo(d) = d·q + least(d, rem), as
-- numpy.array_split cuts them (q, rem: the part's size divided by 10); d0 and d1 are the deciles of a tie
-- group's first and last row
c AS (
    SELECT part, p, pos, neg, n, before, neg_below, q, rem,
           CASE WHEN before < rem * (q + 1) THEN before / (q + 1)
                ELSE rem + (before - rem * (q + 1)) / q END AS d0,
           CASE WHEN before + n - 1 < rem * (q + 1) THEN (before + n - 1) / (q + 1)
                ELSE rem + (before + n - 1 - rem * (q + 1)) / q END AS d1
      FROM (SELECT w.*, total / 10 AS q, total % 10 AS rem FROM w) AS s),
cal AS (
    SELECT part, d0 AS d, sum(n) AS n, sum(n * p) AS sum_p, sum(pos)::float8 AS sum_y
      FROM c WHERE d0 = d1 GROUP BY part, d0
    UNION ALL
    SELECT part, d, sum(o.rows), sum(o.rows * p), sum(o.rows * pos::float8 / n)
      FROM c
     CROSS JOIN LATERAL generate_series(d0, d1) AS d
     CROSS JOIN LATERAL (SELECT least(before + n, d * q + least(d, rem) + q + (d < rem)::int)
                                - greatest(before, d * q + least(d, rem)) AS rows) AS o
     WHERE d0 <> d1
     GROUP BY part, d)
SELECT part, 'summary' AS kind, NULL::bigint AS idx, sum(n) AS n, sum(pos)::float8 AS a,
       sum(pos * (neg_below::float8 + neg::float8 / 2)) AS b,
       sum(-(pos * ln(least(greatest(p, :clip), 1 - :clip)) + neg * ln(1 - least(greatest(p, :clip), 1 - :clip)))) AS c,
       sum(pos * (p - 1) ^ 2 + neg * p ^ 2) AS d
  FROM c GROUP BY part
UNION ALL
SELECT part, 'decile', d + 1, sum(n), sum(sum_p), sum(sum_y), NULL, NULL FROM cal GROUP BY part, d HAVING sum(n) > 0
UNION ALL
SELECT part, 'bin', least(width_bucket(p, 0, 1, {bins}), {bins}), sum(n), NULL, NULL, NULL, NULL
  FROM c GROUP BY 1, 2, 3
"""


@dataclass(frozen=True)
class ScoredMetrics:
    """``summary``: part, n, positives, positive_rate, auc, log_loss, brier; ``calibration``:
    part, decile, n, mean_predicted, observed_rate; ``histogram``: part, bin, p_low, p_high, n."""

    summary: pd.DataFrame
    calibration: pd.DataFrame
    histogram: pd.DataFrame

    def summary_of(self, part: str) -> dict:
        """One part's figures as stored in a model's metrics (zero rows: n = 0 and no figures)."""
        row = self.summary[self.summary["part"] == part]
        cal = self.calibration[self.calibration["part"] == part].sort_values("decile")
        if row.empty:
            return {"n": 0, "positive_rate": None, "auc": None, "log_loss": None, "brier": None, "calibration": []}
        r = row.iloc[0]
        return {
            "n": int(r["n"]),
            "positive_rate": float(r["positive_rate"]),
            "auc": None if pd.isna(r["auc"]) else float(r["auc"]),
            "log_loss": float(r["log_loss"]),
            "brier": float(r["brier"]),
            "calibration": [
                {
                    "decile": int(c.decile),
                    "n": int(c.n),
                    "mean_predicted": float(c.mean_predicted),
                    "observed_rate": float(c.observed_rate),
                }
                for c in cal.itertuples(index=False)
            ],
        }


def scored_metrics(
    conn: Connection, source_sql: str | Sequence[str], parts: Sequence[str], params: dict | None = None
) -> ScoredMetrics:
    """AUC, log loss, Brier, calibration and histogram per part of ``source_sql``.

    ``source_sql`` is a SELECT of rows ``(part, p, y)``, or several whose parts differ:
    ``part`` the 1-based position of the row's part in ``parts`` (an integer, which
    groups and sorts faster than a name), y 0 or 1 (other rows are left out).
    Everything is aggregated in PostgreSQL by distinct p (see the module docstring) and
    only one row per part, decile and bin comes back, named by ``parts``.
    """
    sources = [source_sql] if isinstance(source_sql, str) else list(source_sql)
    counts = "\n    UNION ALL".join(_COUNT_BY_P.format(source=source) for source in sources)
    sql = _SCORED_METRICS_SQL.format(counts=counts, bins=HISTOGRAM_BINS)
    rows = pd.DataFrame(
        conn.execute(sa.text(sql), {**(params or {}), "clip": P_CLIP}).all(),
        columns=["part", "kind", "idx", "n", "a", "b", "c", "d"],
    )
    name = np.array(list(parts), dtype=object)
    rows["part"] = name[rows["part"].astype(np.int64).to_numpy() - 1] if len(rows) else rows["part"]
    s = rows[rows["kind"] == "summary"]
    n = s["n"].astype(float).to_numpy()
    pos = s["a"].astype(float).to_numpy()
    with np.errstate(divide="ignore", invalid="ignore"):
        auc = np.where((pos > 0) & (pos < n), s["b"].astype(float).to_numpy() / (pos * (n - pos)), np.nan)
    summary = pd.DataFrame(
        {
            "part": s["part"].to_numpy(),
            "n": n.astype(np.int64),
            "positives": pos.astype(np.int64),
            "positive_rate": pos / n,
            "auc": auc,
            "log_loss": s["c"].astype(float).to_numpy() / n,
            "brier": s["d"].astype(float).to_numpy() / n,
        }
    )
    d = rows[rows["kind"] == "decile"]
    calibration = pd.DataFrame(
        {
            "part": d["part"].to_numpy(),
            "decile": d["idx"].astype(np.int64).to_numpy(),
            "n": d["n"].astype(np.int64).to_numpy(),
            "mean_predicted": d["a"].astype(float).to_numpy() / d["n"].astype(float).to_numpy(),
            "observed_rate": d["b"].astype(float).to_numpy() / d["n"].astype(float).to_numpy(),
        }
    ).sort_values(["part", "decile"], ignore_index=True)
    h = rows[rows["kind"] == "bin"]
    bins = h["idx"].astype(np.int64).to_numpy()
    histogram = pd.DataFrame(
        {
            "part": h["part"].to_numpy(),
            "bin": bins,
            "p_low": (bins - 1) / HISTOGRAM_BINS,
            "p_high": bins / HISTOGRAM_BINS,
            "n": h["n"].astype(np.int64).to_numpy(),
        }
    ).sort_values(["part", "bin"], ignore_index=True)
    return ScoredMetrics(summary, calibration, histogram)


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
