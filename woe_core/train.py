"""Training (docs/model.md): one call turns the certified feature stores into a candidate model.

Row-level work runs in PostgreSQL: rows are banded by the same SQL as live
scoring (the slots of ``ml.v_woe_anchor_band_inputs_v1``, with ``ml.woe_slot_of_dsold``
and ``ml.woe_slot_of_present`` applied with this model's thresholds and each fold's cuts),
labelled and weighted once into ``ml.woe_anchor_training_rows_v1`` (``TRAINING_ROWS``, on
Citus sharded next to the stores) and aggregated from there into weighted sums per (model,
fold, band, value, label); Python computes the WOE from that small table (``woe_math``),
PostgreSQL scores the OOF rows with the fold maps and computes the metrics from
them (``metrics``). Every artifact is written in
the same transaction as the reads, or nothing is.

Definitions, at cutoff C and data end E (the newest t0 or sold_at):

* label as of A: ``slow21 = 1`` when ``t0 + 21 days <= A`` and the listing had not
  sold by ``t0 + 21 days``; ``0`` when ``sold_at <= t0 + 21 days`` and
  ``sold_at <= A``; otherwise unresolved (dropped).
* TRAIN: ``t0 < C``, labelled as of C, weight ``0.5 ** (days(C - t0) / h)`` with
  fractional days (the exponent capped at 1000, where the weight is ~1e-301, so a
  tiny half-life cannot underflow). EVAL: ``t0 >= C``, labelled as of E, weight 1.
* fold: ``ml.woe_fold(listing_id, K)``.
* cuts: ``percentile_cont(1/3, 2/3)`` of presentation_score over the TRAIN rows
  being fitted that have one (fold k: rows outside fold k; final: all TRAIN rows).
"""

from __future__ import annotations

import hashlib
import json
import math
import numbers
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np
import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError

from . import metrics as M
from . import woe_math
from .bands import BAND_SCHEMA_VERSION, BANDS, DEFAULT_DSOLD_THRESHOLDS
from .certify import ENTRYPOINT
from .contract import SOCIO_STORE
from .db import woe_errors
from .distribute import TRAINING_ROWS, is_distributed  # an ordinary table: Citus shards it next to the stores
from .errors import CertificationRequired, InvalidParameter, WoeError
from .identity import require_actor
from .migrations import source_file

# The bytes behind code_sha256: these files, in this order, each as
# "<relative path>\0<file bytes>\0", hashed together with SHA-256.
TRAINING_CODE_FILES = (
    "woe_core/train.py",
    "woe_core/woe_math.py",
    "woe_core/metrics.py",
    "woe_core/bands.py",
    "sql/V0004__banding_and_live_scoring.sql",
    "sql/V0005__training.sql",
    "sql/V0007__labels_and_weights.sql",
)
MAX_FOLDS = 50
# How long a training waits for another one to finish (ml.woe_anchor_training_lock_v1).
TRAINING_LOCK_WAIT = "10 minutes"
MAX_KEY_SUFFIX = 999
# How long a training waits for a session that holds a lock on the training rows.
TRAINING_ROWS_LOCK_WAIT = "30s"
# work_mem of the training transaction: per sort or hash node, per process.
TRAINING_WORK_MEM = "64MB"

Progress = Callable[[str, float], None]


class TrainingError(WoeError):
    """The data cannot produce a model (no TRAIN rows, one class only, too few listings)."""


def code_sha256() -> str:
    """SHA-256 of the training code (see ``TRAINING_CODE_FILES``)."""
    digest = hashlib.sha256()
    for rel in TRAINING_CODE_FILES:
        digest.update(rel.encode() + b"\0" + source_file(rel).read_bytes() + b"\0")
    return digest.hexdigest()


@dataclass(frozen=True)
class TrainParams:
    """Hyperparameters of one candidate; see ``PARAMETER_CONSTRAINTS``."""

    train_cutoff_ts: datetime
    half_life_days: float = 90.0
    eps: float = 1.0
    n_folds: int = 5
    dsold_thresholds: tuple[float, float, float, float] = DEFAULT_DSOLD_THRESHOLDS


PARAMETER_CONSTRAINTS = {
    "train_cutoff_ts": "a timezone-aware datetime inside the data's t0 range",
    "half_life_days": "a finite number > 0 (days)",
    "eps": "a finite number > 0 (pseudo-count of weight)",
    "n_folds": f"an integer from 2 to {MAX_FOLDS}, and at most the number of TRAIN listings",
    "dsold_thresholds": "four finite numbers, strictly increasing (t1 < t2 < t3 < t4)",
}


def _finite_number(x: object) -> bool:
    return isinstance(x, numbers.Real) and not isinstance(x, bool) and math.isfinite(float(x))


def validate_params(params: TrainParams) -> TrainParams:
    """Check every parameter against its declared constraint; one error lists every bad value."""
    problems = []
    c = params.train_cutoff_ts
    if not isinstance(c, datetime) or c.tzinfo is None:
        problems.append(f"train_cutoff_ts must be {PARAMETER_CONSTRAINTS['train_cutoff_ts']}, got {c!r}")
    for name in ("half_life_days", "eps"):
        value = getattr(params, name)
        if not _finite_number(value) or float(value) <= 0:
            problems.append(f"{name} must be {PARAMETER_CONSTRAINTS[name]}, got {value!r}")
    k = params.n_folds
    if isinstance(k, bool) or not isinstance(k, numbers.Integral) or not 2 <= int(k) <= MAX_FOLDS:
        problems.append(f"n_folds must be {PARAMETER_CONSTRAINTS['n_folds']}, got {k!r}")
    t = params.dsold_thresholds
    if (
        not isinstance(t, list | tuple)
        or len(t) != 4
        or not all(_finite_number(x) for x in t)
        or not all(float(a) < float(b) for a, b in zip(t, t[1:], strict=False))
    ):
        problems.append(f"dsold_thresholds must be {PARAMETER_CONSTRAINTS['dsold_thresholds']}, got {t!r}")
    if problems:
        raise InvalidParameter("; ".join(problems))
    t1, t2, t3, t4 = (float(x) for x in t)
    return TrainParams(c.astimezone(UTC), float(params.half_life_days), float(params.eps), int(k), (t1, t2, t3, t4))


@dataclass
class TrainResult:
    """What a training run produced."""

    model_key: str
    params: TrainParams
    base_rate: float
    base_logit: float
    metrics: dict
    timings: dict[str, float] = field(default_factory=dict)

    def summary(self) -> str:
        oof, ev = self.metrics["oof"], self.metrics["eval"]

        def fmt(x):
            return "n/a" if x is None else f"{x:.4f}"

        return (
            f"{self.model_key}: base rate {self.base_rate:.4f}; "
            f"TRAIN {self.metrics['counts']['train_rows']:,} rows, EVAL {self.metrics['counts']['eval_rows']:,} rows; "
            f"OOF AUC {fmt(oof['auc'])}, log loss {fmt(oof['log_loss'])}, Brier {fmt(oof['brier'])}; "
            f"EVAL AUC {fmt(ev['auc'])}, log loss {fmt(ev['log_loss'])}, Brier {fmt(ev['brier'])}"
        )


# The label as of {asof} and the TRAIN weight, both SQL functions (ml.woe_slow21,
# ml.woe_weight) that the database's provenance check uses too.
_LABEL = "ml.woe_slow21(b.t0, b.sold_at, {asof})"

# Band columns other than the presentation band, which depends on each model's cuts.
_FIXED_BANDS = [name for name, _, _ in BANDS if name != "present"]

# Each fixed band is kept as its slot in ml.woe_anchor_band_values_v1 (a smallint), which
# groups and indexes faster than text: the inputs view's <band>_slot columns, and dsold's
# slot under this training's thresholds (the functions the score views use).
_SLOTS = ",\n           ".join(
    ("ml.woe_slot_of_dsold(b.delta_vs_sold_median_30d, :t1, :t2, :t3, :t4)" if name == "dsold" else f"b.{name}_slot")
    + f"::smallint AS s_{name}"
    for name in _FIXED_BANDS
)

_BUILD_ROWS = f"""
INSERT INTO {TRAINING_ROWS} (listing_id, generation, t0, fold, is_train, y, w,
    {", ".join(f"s_{name}" for name in _FIXED_BANDS)}, presentation_score)
SELECT * FROM (
    SELECT b.listing_id, b.generation, b.t0,
           ml.woe_fold(b.listing_id, :k) AS fold,
           (b.t0 < :cutoff) AS is_train,
           CASE WHEN b.t0 < :cutoff THEN {_LABEL.format(asof=":cutoff")}
                ELSE {_LABEL.format(asof=":data_end")} END::smallint AS y,
           CASE WHEN b.t0 < :cutoff THEN ml.woe_weight(b.t0, :cutoff, :h) ELSE 1.0 END AS w,
           {_SLOTS},
           b.presentation_score
      FROM ml.v_woe_anchor_band_inputs_v1 AS b
) AS labelled
WHERE y IS NOT NULL
"""


_COUNTS_SQL = (
    "SELECT is_train, fold, y, count(*) AS n, sum(w) AS w, count(presentation_score) AS n_scored, "
    "min(presentation_score) FILTER (WHERE presentation_score > '-Infinity' AND presentation_score < 'Infinity') "
    "AS finite_min, "
    "max(presentation_score) FILTER (WHERE presentation_score > '-Infinity' AND presentation_score < 'Infinity') "
    "AS finite_max "
    f"FROM {TRAINING_ROWS} GROUP BY is_train, fold, y"
)


def _sums_sql() -> str:
    """Every band's sums: per (is_train, fold, y) and value of each cut-independent band
    (``slot``) or bucket of presentation score (``bucket``), the weight and row count.

    Rows are first summed per combination of five bands, and of the other four bands and
    the bucket (at most a few thousand groups per split, fold and label, whatever the
    number of rows), then those sums per band: far fewer hash lookups per row than one
    grouping set per band. The two first sums are plain ``GROUP BY`` queries, which a
    server can run in parallel and Citus runs on every shard (it gathers a ``GROUPING
    SETS`` query's rows on the coordinator instead); only the second step, over their
    small results, uses grouping sets. The presentation band differs per model (each has
    its own cuts); rather than band every row K+1 times, rows are summed per bucket of the
    sorted set of all models' cut values ``:bounds`` (every row of a bucket is on the same
    side of every cut; -1 for a missing score), and each bucket is banded per model
    afterwards (``_BUCKET_BANDS_SQL``).
    """
    first = [f"s_{name}" for name in _FIXED_BANDS[:5]]
    second = [f"s_{name}" for name in _FIXED_BANDS[5:]]
    slots = [*first, *second]
    keys = "is_train, fold, y"
    sets = ", ".join(f"({keys}, {c})" for c in [*slots, "bucket"])
    bucket = "coalesce(width_bucket(nullif(presentation_score, 'NaN'::float8), CAST(:bounds AS float8[])), -1)"
    none = "NULL::smallint"
    return f"""
WITH first AS (
    SELECT {keys}, {", ".join(first)}, sum(w) AS w, count(*) AS n
      FROM {TRAINING_ROWS} GROUP BY {keys}, {", ".join(first)}),
second AS (
    SELECT {keys}, {", ".join(second)}, {bucket} AS bucket, sum(w) AS w, count(*) AS n
      FROM {TRAINING_ROWS} GROUP BY {", ".join(str(i) for i in range(1, 3 + len(second) + 2))}),
cells AS (
    SELECT {keys}, {", ".join(first)}, {", ".join(f"{none} AS {c}" for c in second)}, NULL::integer AS bucket, w, n
      FROM first
    UNION ALL
    SELECT {keys}, {", ".join([none] * len(first))}, {", ".join(second)}, bucket, w, n FROM second)
SELECT {keys}, coalesce({", ".join(slots)}) AS slot, bucket, sum(w) AS w, sum(n)::bigint AS n
  FROM cells
 GROUP BY GROUPING SETS ({sets})
"""


# The presentation band of each bucket (see _sums_sql) under each model's cuts: the band
# of the bucket's lower bound (-Infinity for the first), or of a missing score.
_BUCKET_BANDS_SQL = """
SELECT c.model, j.bucket,
       ml.woe_band_present(CASE WHEN j.bucket = -1 THEN NULL
                                WHEN j.bucket = 0 THEN '-Infinity'::float8
                                ELSE (CAST(:bounds AS float8[]))[j.bucket] END, c.c1, c.c2) AS band_value
  FROM _woe_cuts AS c
 CROSS JOIN generate_series(-1, cardinality(CAST(:bounds AS float8[]))) AS j(bucket)
"""


def _logit_sql() -> str:
    """The logit of a row ``r`` of the training rows under the packed model ``p`` (fixed bands by slot,
    the presentation band re-banded with the model's own cuts by the live SQL)."""
    terms = " + ".join(f"coalesce(p.woe[r.s_{name}], 0)" for name in _FIXED_BANDS)
    terms += " + coalesce(p.woe[ml.woe_slot_of_present(r.presentation_score, p.c1, p.c2)], 0)"
    return f"p.base_logit + {terms}"


def data_window(engine: Engine) -> tuple[datetime, datetime, datetime]:
    """(oldest t0, newest t0, data end) of the certified entrypoint; the cutoff must lie in (oldest, newest].

    While the guard passes, the data is the certified data, and its certification
    recorded this range (``audit.certified_time_range``, ``V0018``): read there, in
    constant time. Otherwise (never certified, changed since, expired, certified before
    ``V0018``) read from the data, by a login that may read the store; any other login
    (a reader) gets ``CertificationRequired``.
    """
    with woe_errors(), engine.connect() as conn:  # a login without the grant: GovernanceRefused, not a traceback
        recorded = conn.execute(
            sa.text("SELECT * FROM audit.certified_time_range(:d)"), {"d": ENTRYPOINT}
        ).one_or_none()
        if recorded is not None:
            return recorded[0], recorded[1], recorded[2]
        may_read, login = conn.execute(
            sa.text("SELECT has_table_privilege(:t, 'SELECT'), session_user"), {"t": SOCIO_STORE}
        ).one()
        if not may_read:  # a reader: the views it may read refuse while the guard does
            raise CertificationRequired(
                f"{ENTRYPOINT} has no certification that holds now (never certified, changed since, or too old), "
                f"and login {login!r} may not read {SOCIO_STORE} to find its time range: certify it first "
                "(python -m woe_core certify)"
            )
        return _data_range(conn)


def default_cutoff(t_min: datetime, t_max: datetime) -> datetime:
    """A cutoff that leaves about a quarter of the time range to EVAL, on a whole day (UTC)."""
    c = (t_min + (t_max - t_min) * 0.75).astimezone(UTC)
    return c.replace(hour=0, minute=0, second=0, microsecond=0)


def _data_range(conn: Connection) -> tuple[datetime, datetime, datetime]:
    # The entrypoint has exactly the socio-market store's rows (certification checks
    # the key is unique), so its time range is read there, without the image join.
    row = conn.execute(sa.text(f"SELECT min(t0), max(t0), greatest(max(t0), max(sold_at)) FROM {SOCIO_STORE}")).one()
    if row[0] is None:
        raise TrainingError(f"{ENTRYPOINT} has no rows: load data and certify it first")
    return row[0], row[1], row[2]


def _step(progress: Progress | None, timings: dict, name: str, fraction: float, started: float) -> float:
    now = time.perf_counter()
    timings[name] = now - started
    if progress:
        progress(name, fraction)
    return now


def train(engine: Engine, params: TrainParams, actor: str, progress: Progress | None = None) -> TrainResult:
    """Train one candidate model and write all its artifacts in one transaction.

    Raises ``InvalidParameter`` (nothing read or written), ``CertificationRequired``
    when the input dataset is not freshly certified, ``TrainingError`` when the
    data cannot produce a model.
    """
    p = validate_params(params)
    actor = require_actor(actor)
    with _one_training_at_a_time(engine, progress):
        return _train(engine, p, actor, progress)


@contextmanager
def _one_training_at_a_time(engine: Engine, progress: Progress | None) -> Iterator[None]:
    """Hold the training lock for the whole run, taken before the training's snapshot.

    Two overlapping trainings would deadlock attaching their score partitions, and
    two in the same second would race for one model key; serialising them (the
    second waits, says so, and gives up after ``TRAINING_LOCK_WAIT``) avoids both.
    The lock is a row of ``ml.woe_anchor_locks_v1`` that only the project's
    function may lock, held by an open transaction on a connection of its own, so
    it is released if the process dies and no outside login can hold it.
    """
    take = sa.text("SELECT ml.woe_anchor_training_lock_v1(CAST(:wait AS interval))")
    with woe_errors(), engine.connect().execution_options(isolation_level="READ COMMITTED") as lock_conn:
        try:
            lock_conn.execute(take, {"wait": "1 millisecond"})
        except DBAPIError as exc:
            lock_conn.rollback()
            if getattr(exc.orig, "sqlstate", None) != "WL001":
                raise
            if progress:
                progress("waiting for another training to finish", 0.0)
            lock_conn.execute(take, {"wait": TRAINING_LOCK_WAIT})
        try:
            yield
        finally:
            lock_conn.rollback()  # ends the transaction that holds the lock


def _train(engine: Engine, p: TrainParams, actor: str, progress: Progress | None) -> TrainResult:
    k = p.n_folds
    timings: dict[str, float] = {}
    t = time.perf_counter()
    with woe_errors(), engine.connect().execution_options(isolation_level="REPEATABLE READ") as conn, conn.begin():
        conn.execute(sa.text("SELECT audit.fresh_certification_id(:d)"), {"d": ENTRYPOINT})
        # Sorts and hashes of a million rows fit in memory instead of spilling (this transaction only).
        conn.execute(sa.text(f"SET LOCAL work_mem = '{TRAINING_WORK_MEM}'"))
        # Citus writes a query's parameters into the shards' queries as text, with these settings:
        # every float's digits (the dsold thresholds, the buckets' bounds) and an unambiguous date.
        conn.execute(sa.text("SET LOCAL extra_float_digits = 3"))
        conn.execute(sa.text("SET LOCAL DateStyle = 'ISO, YMD'"))
        t_min, t_max, data_end = _data_range(conn)
        if not t_min < p.train_cutoff_ts <= t_max:
            raise InvalidParameter(
                f"train_cutoff_ts must be {PARAMETER_CONSTRAINTS['train_cutoff_ts']}: after {t_min.isoformat()} "
                f"and at most {t_max.isoformat()}, got {p.train_cutoff_ts.isoformat()}"
            )
        t1, t2, t3, t4 = p.dsold_thresholds
        # Rows this transaction can see are not this training's: left by a process that died
        # between its commit and emptying the table, or inserted by hand. (A DELETE, not a
        # TRUNCATE: on Citus a TRUNCATE here, after reads of the co-located stores over several
        # connections, is refused.)
        _clear_training_rows(conn)
        conn.execute(
            sa.text(_BUILD_ROWS),
            {
                "k": k,
                "cutoff": p.train_cutoff_ts,
                "data_end": data_end,
                "h": p.half_life_days,
                "t1": t1,
                "t2": t2,
                "t3": t3,
                "t4": t4,
            },
        )
        # Statistics let the planner hash the aggregates below instead of sorting the rows.
        # A small sample is enough for that choice (the grouping columns have few values).
        # Not on Citus, which plans the shards' queries from their own statistics and refuses
        # ANALYZE of placements read over several connections in this transaction.
        if not is_distributed(conn, TRAINING_ROWS):
            conn.execute(sa.text("SET LOCAL default_statistics_target = 10"))
            conn.execute(sa.text(f"ANALYZE {TRAINING_ROWS}"))
            conn.execute(sa.text("RESET default_statistics_target"))
        groups = pd.DataFrame(conn.execute(sa.text(_COUNTS_SQL)).mappings().all())
        counts = _check_rows(conn, groups, k)
        t = _step(progress, timings, "band and label rows", 0.3, t)

        cuts = _learn_cuts(conn, groups, k)
        t = _step(progress, timings, "learn presentation cuts", 0.4, t)

        sums = _band_sums(conn, cuts, k)
        fitted = woe_math.fit(*woe_math.dense_sums(_expand_models(sums[sums["is_train"]], k), k), p.eps)
        _check_fit(fitted, k)
        bases, maps = fitted.bases(), fitted.maps()
        t = _step(progress, timings, "aggregate and fit WOE", 0.6, t)

        _pack(conn, bases, maps, cuts)
        key = _choose_key(conn)
        table = _stage_scores(conn, key)
        scored = _scored_metrics(conn, table, k)
        t = _step(progress, timings, "score OOF and EVAL rows", 0.75, t)

        final = bases[bases["model"] == k].iloc[0]
        metric_doc = _metrics(scored, sums, maps, counts, k, data_end)
        _insert_registry(conn, key, p, final, actor, metric_doc)
        _write_cuts(conn, key, cuts, k)
        _write_maps(conn, key, maps, k)
        _write_scores(conn, key)
    _step(progress, timings, "write artifacts", 1.0, t)
    _empty_training_rows(engine)
    return TrainResult(key, p, float(final["base_rate"]), float(final["base_logit"]), metric_doc, timings)


def _clear_training_rows(conn: Connection) -> None:
    """Delete the training rows this transaction can see, waiting at most ``TRAINING_ROWS_LOCK_WAIT`` for
    a session that holds a lock on the table (such a session would otherwise stall every training)."""
    conn.execute(sa.text(f"SET LOCAL lock_timeout = '{TRAINING_ROWS_LOCK_WAIT}'"))
    try:
        conn.execute(sa.text(f"DELETE FROM {TRAINING_ROWS}"))
    except DBAPIError as exc:  # the training's transaction is lost either way
        if getattr(exc.orig, "sqlstate", None) != "55P03":  # lock_not_available
            raise
        raise TrainingError(
            f"another session has held a lock on {TRAINING_ROWS} for {TRAINING_ROWS_LOCK_WAIT}: "
            "end that session (pg_stat_activity shows it) and train again"
        ) from exc
    conn.execute(sa.text("RESET lock_timeout"))


def _empty_training_rows(engine: Engine) -> None:
    """Give the committed training's rows back to the disk (a TRUNCATE, in a transaction of its own).

    Best effort: if it cannot have the table within a few seconds (a session holding a lock on
    it) or fails, the rows stay until the next training deletes them in its own transaction,
    which is slower but reads the same.
    """
    try:
        with engine.begin() as conn:
            conn.execute(sa.text("SET LOCAL lock_timeout = '5s'"))
            conn.execute(sa.text(f"TRUNCATE {TRAINING_ROWS}"))
    except DBAPIError:
        pass


def _band_slots(conn: Connection) -> dict[str, dict[int, str]]:
    """Every band's values by their slot in ``ml.woe_anchor_band_values_v1``, by band."""
    out: dict[str, dict[int, str]] = {}
    for band, value, slot in conn.execute(
        sa.text(
            "SELECT band_name, band_value, slot FROM ml.woe_anchor_band_values_v1 "
            "WHERE band_schema_version = :v ORDER BY slot"
        ),
        {"v": BAND_SCHEMA_VERSION},
    ):
        out.setdefault(band, {})[int(slot)] = value
    return out


def _check_rows(conn: Connection, groups: pd.DataFrame, k: int) -> dict:
    """Row and weight counts from the per-(split, fold, label) sums; refuses data that cannot train."""
    train_part = groups[groups["is_train"]] if len(groups) else groups
    eval_part = groups[~groups["is_train"]] if len(groups) else groups

    def total(part: pd.DataFrame, column: str, label: int | None = None) -> float:
        if label is not None:
            part = part[part["y"] == label]
        return float(part[column].astype(float).sum()) if len(part) else 0.0

    counts = {
        "train_rows": int(total(train_part, "n")),
        "eval_rows": int(total(eval_part, "n")),
        "train_weight": total(train_part, "w"),
        "eval_weight": total(eval_part, "w"),
        "train_pos": int(total(train_part, "n", 1)),
        "train_neg": int(total(train_part, "n", 0)),
    }
    if counts["train_rows"] == 0:
        raise TrainingError("no TRAIN row is resolved at this cutoff: choose a later train_cutoff_ts")
    if counts["train_pos"] == 0 or counts["train_neg"] == 0:
        only = "slow21 = 1" if counts["train_neg"] == 0 else "slow21 = 0"
        raise TrainingError(f"every TRAIN row has {only}: WOE needs both classes; choose another cutoff")
    # All snapshots of a listing share a fold, so K non-empty folds prove >= K listings;
    # only otherwise are the listings counted (a sort over every TRAIN row).
    if train_part["fold"].nunique() < k:
        listings = conn.execute(
            sa.text(f"SELECT count(DISTINCT listing_id) FROM {TRAINING_ROWS} WHERE is_train")
        ).scalar_one()
        if listings < k:
            raise InvalidParameter(f"n_folds must be at most the number of TRAIN listings ({listings}), got {k}")
    return counts


def _band_sums(conn: Connection, cuts: pd.DataFrame, k: int) -> pd.DataFrame:
    """The long table (is_train, fold, model, band_name, band_value, w1, w0, n1, n0) of weighted sums.

    ``model`` is NaN for the cut-independent bands (the same for every model); the
    presentation band has a row per model: every model for TRAIN rows, the final model
    for EVAL rows. Values no row has are left out.
    """
    slots = _band_slots(conn)
    value_of = {slot: (band, value) for band in _FIXED_BANDS for slot, value in slots[band].items()}
    bounds = sorted({float(x) for x in cuts["c1"]} | {float(x) for x in cuts["c2"]})
    long = conn.execute(sa.text(_sums_sql()), {"bounds": bounds}).all()
    bands_of_bucket: dict[int, list[tuple[int, str]]] = {}
    for model, bucket, value in conn.execute(sa.text(_BUCKET_BANDS_SQL), {"bounds": bounds}):
        bands_of_bucket.setdefault(bucket, []).append((model, value))
    # (is_train, fold, model or None, band, value) -> [w1, w0, n1, n0]
    acc: dict[tuple[bool, int, int | None, str, str], list[float]] = {}

    def add(key: tuple[bool, int, int | None, str, str], y: int, w: float, n: int) -> None:
        cell = acc.setdefault(key, [0.0, 0.0, 0, 0])
        cell[0 if y == 1 else 1] += w
        cell[2 if y == 1 else 3] += n

    for is_train, fold, y, slot, bucket, w, n in long:
        if slot is not None:
            add((is_train, fold, None, *value_of[slot]), y, w, n)
        elif bucket is not None:
            for model, value in bands_of_bucket[bucket]:
                if is_train or model == k:
                    add((is_train, fold, model, "present", value), y, w, n)
    rows = [
        (is_train, fold, np.nan if model is None else float(model), band, value, w1, w0, int(n1), int(n0))
        for (is_train, fold, model, band, value), (w1, w0, n1, n0) in acc.items()
    ]
    return pd.DataFrame(rows, columns=["is_train", "fold", "model", "band_name", "band_value", "w1", "w0", "n1", "n0"])


def _check_fit(fitted: woe_math.Fit, k: int) -> None:
    """Every model must see both classes with positive weight, or its base rate is 0 or 1."""
    for m, p in enumerate(fitted.p):
        if not 0.0 < p < 1.0:
            which = f"the TRAIN rows outside fold {m}" if m < k else "the TRAIN rows"
            only = 1 if p >= 1.0 else 0
            raise TrainingError(
                f"{which} have only slow21 = {only} (or zero weight on the other class): "
                "use fewer folds, a later cutoff or a longer half-life"
            )


# Order statistics of the TRAIN presentation scores (see _order_statistics).
_SCORES = f"SELECT fold, presentation_score AS v FROM {TRAINING_ROWS} WHERE is_train AND presentation_score IS NOT NULL"
# Buckets of the whole range: -1 for -Infinity, 1..nb for finite scores (width_bucket over nb
# thresholds from the finite minimum up), nb + 1 for Infinity, nb + 2 for NaN, which
# PostgreSQL sorts above every number.
_WHOLE_BUCKET = (
    "CASE WHEN v = '-Infinity' THEN -1 WHEN v = 'Infinity' THEN :nb + 1 WHEN v = 'NaN' THEN :nb + 2 "
    "ELSE width_bucket(v, CAST(:th AS float8[])) END"
)
# The scores of a window ({where}) with their bucket ({bucket}): per bucket and fold, the count and
# value range; and the distinct values of the buckets :targets.
_BUCKETED = "SELECT fold, v, {bucket} AS b FROM (" + _SCORES + ") AS s {where}"
_HISTOGRAM_SQL = (
    "SELECT b, fold, count(*) AS n, min(v) AS lo, max(v) AS hi FROM (" + _BUCKETED + ") AS h GROUP BY b, fold"
)
_VALUES_SQL = (
    "SELECT b, fold, v, count(*) AS n FROM (" + _BUCKETED + ") AS h "
    "WHERE b = ANY(CAST(:targets AS integer[])) GROUP BY b, fold, v"
)
# A bucket of at most this many rows has its distinct values fetched; a bigger one is split again.
ORDER_STATISTIC_FETCH_LIMIT = 50_000
ORDER_STATISTIC_MAX_ROUNDS = 8


def _order_statistics(
    conn: Connection, wanted: dict[int, list[int]], k: int, n_scores: int, finite_range: tuple[float, float] | None
) -> dict[tuple[int, int], float]:
    """The r-th smallest TRAIN presentation score of each model m and r in ``wanted[m]`` (1-based,
    among the rows outside fold m; all rows for m = K), in PostgreSQL's float8 order.

    Rather than sort every score, one scan counts the ``n_scores`` scores per fold in
    about √N buckets of equal width over their finite range (``finite_range``), which
    locates the bucket holding each wanted rank and the number of that model's scores
    below it. A bucket whose scores are all equal gives its value; a bucket of at most
    ``ORDER_STATISTIC_FETCH_LIMIT`` rows has its distinct values and their counts
    fetched (a second scan, one for all such buckets), and is ranked here; a bigger
    one (scores crowded into a sliver of the range) is split the same way again. The
    values are exact: this selects order statistics, it does not estimate them.
    """
    found: dict[tuple[int, int], float] = {}
    n_total = sum(len(ranks) for ranks in wanted.values())

    def of_model(m: int, by_fold: dict[int, int]) -> int:
        return sum(n for fold, n in by_fold.items() if m == k or fold != m)

    # Each window: its value bounds (None for every score), its number of rows and its
    # targets, (model, rank) -> rank among the window's rows of that model.
    windows: list[tuple[tuple[float, float] | None, int, dict[tuple[int, int], int]]] = [
        (None, n_scores, {(m, r): r for m, ranks in wanted.items() for r in ranks})
    ]
    rounds = 0
    while windows:
        rounds += 1
        bounds, n_rows, targets = windows.pop()
        n_buckets = min(4096, max(16, math.isqrt(n_rows)))
        if bounds is None:
            lo, hi = finite_range if finite_range is not None else (0.0, 0.0)
            where, bucket = "", _WHOLE_BUCKET
        else:
            lo, hi = bounds
            where, bucket = "WHERE v >= :lo AND v <= :hi", "width_bucket(v, CAST(:th AS float8[]))"
        thresholds = sorted({float(x) for x in np.linspace(lo, hi, n_buckets)} | {lo})
        params = {"lo": lo, "hi": hi, "th": thresholds, "nb": len(thresholds)}
        # the value of each bucket of a non-finite score (whole range only)
        special = (
            {-1: -math.inf, len(thresholds) + 1: math.inf, len(thresholds) + 2: math.nan} if bounds is None else {}
        )
        per_bucket: dict[int, dict[int, int]] = {}
        value_range: dict[int, tuple[float, float]] = {}
        for b, fold, n, b_lo, b_hi in conn.execute(sa.text(_HISTOGRAM_SQL.format(bucket=bucket, where=where)), params):
            per_bucket.setdefault(b, {})[fold] = n
            if b not in special:
                old = value_range.get(b, (b_lo, b_hi))
                value_range[b] = (min(old[0], b_lo), max(old[1], b_hi))
        order = sorted(per_bucket)
        fetch: dict[int, dict[tuple[int, int], int]] = {}
        split: dict[int, dict[tuple[int, int], int]] = {}
        for (m, r), rank in targets.items():
            below = 0
            for b in order:
                here = of_model(m, per_bucket[b])
                if below + here >= rank:
                    break
                below += here
            else:
                raise TrainingError(f"model {m} has fewer than {r} presentation scores")
            if b in special:
                found[(m, r)] = special[b]
            elif value_range[b][0] == value_range[b][1]:
                found[(m, r)] = value_range[b][0]
            elif sum(per_bucket[b].values()) <= ORDER_STATISTIC_FETCH_LIMIT or rounds >= ORDER_STATISTIC_MAX_ROUNDS:
                fetch.setdefault(b, {})[(m, r)] = rank - below
            else:
                split.setdefault(b, {})[(m, r)] = rank - below
        windows.extend((value_range[b], sum(per_bucket[b].values()), t) for b, t in split.items())
        if fetch:
            values: dict[int, list[tuple[float, int, int]]] = {}
            for b, fold, v, n in conn.execute(
                sa.text(_VALUES_SQL.format(bucket=bucket, where=where)),
                {**params, "targets": sorted(fetch)},
            ):
                values.setdefault(b, []).append((v, fold, n))
            for b, bucket_targets in fetch.items():
                ordered = sorted(values[b])
                for (m, r), rank in bucket_targets.items():
                    seen = 0
                    for v, fold, n in ordered:
                        if m == k or fold != m:
                            seen += n
                            if seen >= rank:
                                found[(m, r)] = v
                                break
    if len(found) != n_total:
        raise TrainingError("some presentation-score ranks were not found")
    return found


def _learn_cuts(conn: Connection, groups: pd.DataFrame, k: int) -> pd.DataFrame:
    """Every model's cuts, as ``percentile_cont(1/3, 2/3)`` computes them, without sorting the rows.

    With N scores, percentile f lies at 0-based position ``f·(N − 1)``; between the
    order statistics at its floor and ceiling it is ``lo + frac·(hi − lo)`` (PostgreSQL's
    ``percentile_cont``, the same IEEE operations), so the cuts are bit-identical to it.
    The order statistics come from ``_order_statistics``.
    """
    train_part = groups[groups["is_train"]]
    fractions = (1.0 / 3.0, 2.0 / 3.0)
    plan: dict[int, list[tuple[int, int, float]]] = {}
    n_rows: dict[int, int] = {}
    for m in range(k + 1):
        part = train_part if m == k else train_part[train_part["fold"] != m]
        n = int(part["n_scored"].sum())
        if n == 0:
            which = f"outside fold {m}" if m < k else "at all"
            raise TrainingError(f"no TRAIN row {which} has a presentation score: cannot learn presentation cuts")
        n_rows[m] = n
        plan[m] = []
        for f in fractions:
            position = f * (n - 1)
            lo = math.floor(position)
            plan[m].append((lo + 1, math.ceil(position) + 1, position - lo))
    wanted = {m: sorted({r for lo, hi, _ in plan[m] for r in (lo, hi)}) for m in range(k + 1)}
    finite = (train_part["finite_min"].dropna(), train_part["finite_max"].dropna())
    finite_range = (float(finite[0].min()), float(finite[1].max())) if len(finite[0]) else None
    found = _order_statistics(conn, wanted, k, n_rows[k], finite_range)
    rows = []
    for m in range(k + 1):
        cut = []
        for lo, hi, frac in plan[m]:
            low, high = found[(m, lo)], found[(m, hi)]
            cut.append(low if lo == hi else low + frac * (high - low))
        rows.append({"model": m, "c1": cut[0], "c2": cut[1], "n_rows": n_rows[m]})
    cuts = pd.DataFrame(rows)
    conn.execute(sa.text("CREATE TEMP TABLE _woe_cuts (model integer, c1 float8, c2 float8) ON COMMIT DROP"))
    conn.execute(
        sa.text("INSERT INTO _woe_cuts VALUES (:model, :c1, :c2)"), cuts[["model", "c1", "c2"]].to_dict("records")
    )
    return cuts


def _expand_models(sums: pd.DataFrame, k: int) -> pd.DataFrame:
    """Give the cut-independent band sums to every model; the presentation sums already name theirs."""
    fixed = sums[sums["model"].isna()].drop(columns="model")
    present = sums[sums["model"].notna()].astype({"model": int})
    out = pd.concat([fixed.assign(model=m) for m in range(k + 1)] + [present], ignore_index=True)
    return out.fillna({c: 0 for c in woe_math.SUM_COLUMNS})


def _pack(conn: Connection, bases: pd.DataFrame, maps: pd.DataFrame, cuts: pd.DataFrame) -> None:
    slots = conn.execute(
        sa.text("SELECT band_name, band_value, slot FROM ml.woe_anchor_band_values_v1 WHERE band_schema_version = :v"),
        {"v": BAND_SCHEMA_VERSION},
    ).all()
    slot_of = {(b, v): s for b, v, s in slots}
    n_slots = max(slot_of.values())
    conn.execute(
        sa.text(
            "CREATE TEMP TABLE _woe_packed (model integer, base_logit float8, c1 float8, c2 float8, "
            "woe float8[]) ON COMMIT DROP"
        )
    )
    records = []
    for (_, base), (_, cut) in zip(
        bases.sort_values("model").iterrows(), cuts.sort_values("model").iterrows(), strict=True
    ):
        arr: list[float | None] = [None] * n_slots
        for b, v, w in maps.loc[maps["model"] == base["model"], ["band_name", "band_value", "woe"]].itertuples(
            index=False
        ):
            arr[slot_of[(b, v)] - 1] = float(w)
        records.append(
            {
                "model": int(base["model"]),
                "base_logit": float(base["base_logit"]),
                "c1": float(cut["c1"]),
                "c2": float(cut["c2"]),
                "woe": arr,
            }
        )
    conn.execute(sa.text("INSERT INTO _woe_packed VALUES (:model, :base_logit, :c1, :c2, :woe)"), records)


def _metrics(
    scored: M.ScoredMetrics,
    sums: pd.DataFrame,
    maps: pd.DataFrame,
    counts: dict,
    k: int,
    data_end: datetime,
) -> dict:
    final_map = maps[maps["model"] == k]

    def shares(train_flag: bool) -> dict[str, dict[str, float]]:
        part = sums[(sums["is_train"] == train_flag) & (sums["model"].isna() | (sums["model"] == k))]
        grouped = part.groupby(["band_name", "band_value"])[["n1", "n0"]].sum()
        out: dict[str, dict[str, float]] = {}
        for (band, value), row in grouped.iterrows():
            out.setdefault(band, {})[value] = float(row["n1"] + row["n0"])
        return out

    train_shares, eval_shares = shares(True), shares(False)
    return {
        "counts": counts,
        "data_end": data_end.isoformat(),
        "oof": scored.summary_of("oof"),
        "eval": scored.summary_of("eval"),
        "information_value": M.information_value(final_map),
        "fold_stability": M.fold_stability(maps, k),
        "psi": {band: M.psi(train_shares.get(band, {}), eval_shares.get(band, {})) for band, _, _ in BANDS},
        "band_shares": {"train": train_shares, "eval": eval_shares},
    }


def _now() -> datetime:
    return datetime.now(UTC)


def _choose_key(conn: Connection) -> str:
    """``tom_aft_v1_YYYYMMDD_HHMMSS`` (UTC), with ``_2``, ``_3``, ... when that second is taken.

    Trainings run one at a time (``_one_training_at_a_time``) and this transaction's
    snapshot was taken after the previous one committed, so every key a training
    used is visible here.
    """
    stamp = _now().strftime("tom_aft_v1_%Y%m%d_%H%M%S")
    # Keys of registered or deleted models, and keys whose score table someone already staged.
    taken = set(
        conn.execute(
            sa.text(
                "SELECT model_key FROM ml.woe_anchor_model_registry_v1 WHERE model_key = :s OR model_key LIKE :p "
                "UNION SELECT model_key FROM ml.woe_anchor_model_deletions_v1 WHERE model_key = :s OR model_key LIKE :p "
                "UNION SELECT substr(c.relname, length(ml.woe_anchor_scores_partition_name(''))  + 1) FROM pg_class AS c "
                "WHERE c.relnamespace = 'ml'::regnamespace AND (c.relname = ml.woe_anchor_scores_partition_name(:s) "
                "OR c.relname LIKE ml.woe_anchor_scores_partition_name(:p))"
            ),
            {"s": stamp, "p": stamp + "\\_%"},
        ).scalars()
    )
    for n in range(1, MAX_KEY_SUFFIX + 1):
        key = stamp if n == 1 else f"{stamp}_{n}"
        if key not in taken:
            return key
    raise TrainingError(f"more than {MAX_KEY_SUFFIX} models were registered in the second {stamp}")


def _insert_registry(
    conn: Connection, key: str, p: TrainParams, final: pd.Series, actor: str, metric_doc: dict
) -> None:
    params = {
        "key": key,
        "cutoff": p.train_cutoff_ts,
        "h": p.half_life_days,
        "eps": p.eps,
        "k": p.n_folds,
        "v": BAND_SCHEMA_VERSION,
        "sha": code_sha256(),
        "br": float(final["base_rate"]),
        "bl": float(final["base_logit"]),
        "t1": p.dsold_thresholds[0],
        "t2": p.dsold_thresholds[1],
        "t3": p.dsold_thresholds[2],
        "t4": p.dsold_thresholds[3],
        "actor": actor,
        "metrics": json.dumps(metric_doc, allow_nan=False),
    }
    inserted = conn.execute(
        sa.text(
            "INSERT INTO ml.woe_anchor_model_registry_v1 (model_key, train_cutoff_ts, half_life_days, eps, n_folds, "
            "band_schema_version, code_sha256, is_active, base_rate, base_logit, dsold_t1, dsold_t2, dsold_t3, dsold_t4, "
            "created_by, metrics) VALUES (:key, :cutoff, :h, :eps, :k, :v, :sha, false, :br, :bl, :t1, :t2, :t3, :t4, "
            ":actor, CAST(:metrics AS jsonb)) ON CONFLICT (model_key) DO NOTHING RETURNING model_key"
        ),
        params,
    ).scalar_one_or_none()
    if inserted is None:  # registered by hand, outside training, since this training chose it
        raise TrainingError(f"model key {key!r} was registered by someone else meanwhile: train again")


def _write_cuts(conn: Connection, key: str, cuts: pd.DataFrame, k: int) -> None:
    conn.execute(
        sa.text(
            "INSERT INTO ml.woe_anchor_cuts_v1 (model_key, fold_id, c1, c2, n_rows) VALUES (:key, :fold, :c1, :c2, :n)"
        ),
        [
            {"key": key, "fold": None if r.model == k else int(r.model), "c1": r.c1, "c2": r.c2, "n": r.n_rows}
            for r in cuts.itertuples(index=False)
        ],
    )


def _write_maps(conn: Connection, key: str, maps: pd.DataFrame, k: int) -> None:
    conn.execute(
        sa.text(
            "INSERT INTO ml.woe_anchor_map_v1 (model_key, fold_id, band_name, band_value, woe, w_pos, w_neg, n_pos, n_neg) "
            "VALUES (:key, :fold, :band, :value, :woe, :w1, :w0, :n1, :n0)"
        ),
        [
            {
                "key": key,
                "fold": None if r.model == k else int(r.model),
                "band": r.band_name,
                "value": r.band_value,
                "woe": float(r.woe),
                "w1": float(r.w1),
                "w0": float(r.w0),
                "n1": int(r.n1),
                "n0": int(r.n0),
            }
            for r in maps.itertuples(index=False)
        ],
    )


def _stage_scores(conn: Connection, key: str) -> str:
    """Score every TRAIN row with its fold's model straight into the model's staged score table."""
    table = conn.execute(sa.text("SELECT ml.woe_anchor_scores_stage_v1(:key)"), {"key": key}).scalar_one()
    # ``table`` is the quoted name the database built from the validated key.
    conn.execute(
        sa.text(
            f"INSERT INTO {table} (model_key, generation, listing_id, t0, fold_id, is_oof, woe_logit, p_slow21, slow21) "
            "SELECT :key, generation, listing_id, t0, fold, true, logit, ml.woe_sigmoid(logit), y "
            f"FROM (SELECT r.*, {_logit_sql()} AS logit FROM {TRAINING_ROWS} AS r "
            "      JOIN _woe_packed AS p ON p.model = r.fold WHERE r.is_train) AS scored"
        ),
        {"key": key},
    )
    return table


def _scored_metrics(conn: Connection, table: str, k: int) -> M.ScoredMetrics:
    """Metrics of the OOF rows (from the staged table) and the EVAL rows (final model), computed in the database."""
    sources = (
        f"SELECT 1 AS part, p_slow21 AS p, slow21 AS y FROM {table}",
        f"SELECT 2 AS part, ml.woe_sigmoid({_logit_sql()}) AS p, r.y FROM {TRAINING_ROWS} AS r "
        "JOIN _woe_packed AS p ON p.model = :k WHERE NOT r.is_train",
    )
    return M.scored_metrics(conn, sources, ("oof", "eval"), {"k": k})


def _write_scores(conn: Connection, key: str) -> int:
    """Index the staged scores and attach them as the model's partition (its registry row exists by now)."""
    return conn.execute(sa.text("SELECT ml.woe_anchor_scores_attach_v1(:key)"), {"key": key}).scalar_one()
