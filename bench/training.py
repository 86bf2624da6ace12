"""Benchmark of training: ``python -m bench.training [--snapshots N]`` from the repository root.

1. End-to-end ``python -m woe_core train`` (5 folds, every artifact including the
   OOF score rows) on N demo snapshots, in a child process whose wall time and
   peak RSS are measured.
2. On the same banded TRAIN rows pulled into memory, the WOE fit + 5-fold OOF of:
   this engine's math (``woe_math``), a pure numpy ``bincount`` reference,
   ``sklearn.preprocessing.TargetEncoder`` (cv=5), ``category_encoders.WOEEncoder``
   and ``optbinning.BinningProcess`` (fold loops), each as a ratio to numpy.
   The peers are optional (``pip install -r bench/requirements.txt``); a missing
   one is reported, not faked. Medians of 3 runs. Nothing asserts a time.
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from datetime import UTC, datetime

import numpy as np
import pandas as pd

from woe_core import db, woe_math
from woe_core.bands import BAND_NAMES, BANDS

from .common import QUICK_SNAPSHOTS, ROOT, fresh_engine, load_certified

CUTOFF = datetime(2026, 7, 1, tzinfo=UTC)
K = 5
EPS = 1.0


def train_args(url: str) -> list[str]:
    """The ``woe`` arguments of every benchmark's training run: this cutoff, K and eps, as actor "bench"."""
    return [
        "--database-url",
        url,
        "train",
        "--cutoff",
        CUTOFF.isoformat(),
        "--folds",
        str(K),
        "--eps",
        str(EPS),
        "--actor",
        "bench",
    ]


def banded_train_rows(engine, model_key: str) -> dict[str, np.ndarray]:
    """The TRAIN rows of ``model_key`` with their final-model band slots, fold, label and weight."""
    if not re.fullmatch(r"tom_aft_v1_[0-9]{8}_[0-9]{6}(_[0-9]{1,3})?", model_key):
        raise SystemExit(f"unexpected model key {model_key!r} from the CLI")  # COPY takes no parameters
    slot_cols = ", ".join(f"ml.woe_slot_{name}(b.{col})::int2 AS s_{name}" for name, col, _ in BANDS)
    sql = (
        f"SELECT s.fold_id::int2 AS fold, s.slow21 AS y, ml.woe_weight(s.t0, r.train_cutoff_ts, r.half_life_days) AS w, "
        f"{slot_cols} FROM ml.woe_anchor_scores_v1 s "
        f"JOIN ml.woe_anchor_model_registry_v1 r USING (model_key) "
        f"JOIN ml.v_woe_anchor_bands_by_model_v1 b ON b.model_key = s.model_key AND b.listing_id = s.listing_id "
        f"AND b.t0 = s.t0 WHERE s.model_key = '{model_key}'"
    )
    columns = [("fold", "int2"), ("y", "int2"), ("w", "float8")] + [(f"s_{b}", "int2") for b in BAND_NAMES]
    with engine.connect() as conn:
        return db.fetch_arrays(conn, sql, columns)


def to_codes(rows):
    codes, levels = {}, {}
    for band in BAND_NAMES:
        slots = rows[f"s_{band}"].astype(np.int64)
        uniq, code = np.unique(slots, return_inverse=True)
        codes[band], levels[band] = code, [str(u) for u in uniq]
    return codes, levels


def numpy_reference(codes, levels, fold, y, w):
    """One weighted bincount per band on a (level, fold, label) key; fold-out sums = total - fold."""
    logit = np.zeros(len(y))
    tot1 = np.bincount(fold, weights=w * y, minlength=K)
    tot0 = np.bincount(fold, weights=w * (1 - y), minlength=K)
    p = (tot1.sum() - tot1) / ((tot1.sum() - tot1) + (tot0.sum() - tot0))
    base = np.log(p / (1 - p))
    logit += base[fold]
    for band, code in codes.items():
        n = len(levels[band])
        s = np.bincount((code * K + fold) * 2 + y, weights=w, minlength=n * K * 2).reshape(n, K, 2)
        out = s.sum(axis=1, keepdims=True) - s  # rows outside each fold
        woe = np.log((out[..., 1] + EPS * p) / (out[..., 0] + EPS * (1 - p))) - base
        logit += woe[code, fold]
    return logit


def fold_sums(
    codes: dict[str, np.ndarray],
    fold: np.ndarray,
    y: np.ndarray,
    w: np.ndarray,
    levels: dict[str, list[str]],
    n_folds: int,
) -> tuple[np.ndarray, list[tuple[str, str]], dict[str, int]]:
    """In-memory counterpart of the training aggregate (a benchmark helper, so it is not hashed into code_sha256): one weighted ``bincount`` per band.

    ``codes[band]`` holds each row's value index into ``levels[band]``. Returns
    (sums, levels, offset of each band's first level); every model gets the same
    sums (in memory there is no per-fold presentation re-banding).
    """
    blocks: list[np.ndarray] = []
    all_levels: list[tuple[str, str]] = []
    offsets: dict[str, int] = {}
    for band, code in codes.items():
        n = len(levels[band])
        offsets[band] = len(all_levels)
        all_levels += [(band, v) for v in levels[band]]
        key = (fold * n + code) * 2 + y
        size = n_folds * n * 2
        ws = np.bincount(key, weights=w, minlength=size).reshape(n_folds, n, 2)
        ns = np.bincount(key, minlength=size).reshape(n_folds, n, 2)
        blocks.append(np.stack([ws[..., 1], ws[..., 0], ns[..., 1], ns[..., 0]], axis=-1))
    one = np.concatenate(blocks, axis=1)  # (fold, level, stat)
    return np.broadcast_to(one, (n_folds + 1, *one.shape)), all_levels, offsets


def engine_math(codes, levels, fold, y, w):
    """woe_core's own math: ``fold_sums`` above, ``woe_math.fit``, then the OOF lookup."""
    sums, all_levels, offsets = fold_sums(codes, fold, y, w, levels, K)
    fitted = woe_math.fit(sums, all_levels, EPS)
    woe = np.nan_to_num(fitted.woe)
    logit = fitted.base_logit[fold]
    for band, code in codes.items():
        logit = logit + woe[fold, offsets[band] + code]
    return logit


def sklearn_target_encoder(codes, levels, fold, y, w):
    from sklearn.preprocessing import TargetEncoder

    x = np.column_stack([codes[b] for b in BAND_NAMES])
    return TargetEncoder(categories="auto", target_type="binary", cv=K, shuffle=False).fit_transform(x, y)


def _fold_loop(make, codes, fold, y):
    frame = pd.DataFrame({b: codes[b].astype(str) for b in BAND_NAMES})
    out = np.zeros((len(y), len(BAND_NAMES)))
    for k in range(K):
        test = fold == k
        encoder = make()
        encoder.fit(frame[~test], y[~test])
        out[test] = np.asarray(encoder.transform(frame[test]), dtype=float)
    return out


def category_encoders_woe(codes, levels, fold, y, w):
    import category_encoders as ce

    return _fold_loop(lambda: ce.WOEEncoder(cols=list(BAND_NAMES)), codes, fold, y)


def optbinning_process(codes, levels, fold, y, w):
    from optbinning import BinningProcess

    names = list(BAND_NAMES)
    return _fold_loop(lambda: BinningProcess(names, categorical_variables=names), codes, fold, y)


VARIANTS = [
    ("numpy bincount reference", numpy_reference),
    ("woe_core engine math", engine_math),
    ("sklearn TargetEncoder (cv=5, unweighted)", sklearn_target_encoder),
    ("category_encoders WOEEncoder, fold loop (unweighted)", category_encoders_woe),
    ("optbinning BinningProcess, fold loop (unweighted)", optbinning_process),
]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--snapshots", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_SNAPSHOTS:,} snapshots, one run of each variant")
    args = parser.parse_args()
    if args.quick:
        args.snapshots, args.repeat = QUICK_SNAPSHOTS, 1

    engine = fresh_engine()
    loaded = load_certified(engine, args.snapshots)
    url = engine.url.render_as_string(hide_password=False)

    cmd = [sys.executable, "-m", "woe_core", *train_args(url)]
    # Peak RSS from the child's VmHWM, sampled until it exits: getrusage's ru_maxrss
    # would also count the copy of this (large) process the child was forked from.
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        t = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, text=True, cwd=ROOT)
        peak_kb = 0
        while proc.poll() is None:
            try:
                with open(f"/proc/{proc.pid}/status") as status:
                    hwm = next((line for line in status if line.startswith("VmHWM:")), None)
                peak_kb = max(peak_kb, int(hwm.split()[1])) if hwm else peak_kb
            except (OSError, ValueError):
                pass
            time.sleep(0.05)
        wall = time.perf_counter() - t
        out.seek(0)
        err.seek(0)
        done = subprocess.CompletedProcess(cmd, proc.returncode, out.read(), err.read())
    if done.returncode:
        raise SystemExit(f"training failed: {done.stderr.strip()}")
    peak_mb = peak_kb / 1024
    key = done.stdout.split(":", 1)[0].strip()

    rows = banded_train_rows(engine, key)
    codes, levels = to_codes(rows)
    fold, y, w = rows["fold"].astype(np.int64), rows["y"].astype(np.int64), rows["w"]
    results: list[tuple[str, float | None, float | str]] = []
    reference: float | None = None
    ref_logit: np.ndarray | None = None
    for name, fn in VARIANTS:
        try:
            runs = []
            for _ in range(args.repeat if "numpy" in name or "engine" in name else 1 + (args.repeat > 1)):
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    t = time.perf_counter()
                    logit = fn(codes, levels, fold, y, w)
                    runs.append(time.perf_counter() - t)
            seconds = statistics.median(runs)
            if name.startswith("numpy"):
                reference, ref_logit = seconds, logit
            if name.startswith("woe_core"):
                assert ref_logit is not None and np.allclose(logit, ref_logit, atol=1e-9), (
                    "engine math disagrees with the numpy reference"
                )
            results.append((name, seconds, seconds / reference if reference else float("nan")))
        except ImportError as exc:
            results.append((name, None, f"not installed ({exc.name})"))

    print(
        f"\ntraining benchmark: {loaded['socio_rows']:,} snapshots ({loaded['listings']:,} listings), "
        f"{len(y):,} TRAIN rows at cutoff {CUTOFF:%Y-%m-%d}, K={K}\n"
    )
    print("| end-to-end `python -m woe_core train` | measured | target |")
    print("|---|---|---|")
    print(f"| wall time (child process) | {wall:.2f} s | ≤ 10 s |")
    print(f"| peak RSS of the Python process | {peak_mb:.0f} MB | ≤ 1024 MB |")
    print(f"\nsteps (from the CLI's progress lines):\n{done.stderr.strip()}\n")
    print(f"summary: {done.stdout.splitlines()[0]}\n")
    print("| WOE fit + 5-fold OOF on the same banded rows in memory | median | × numpy |")
    print("|---|---|---|")
    for name, measured, ratio in results:
        if measured is None:
            print(f"| {name} | – | {ratio} |")
        else:
            print(f"| {name} | {measured * 1000:.0f} ms | {ratio:.2f}× |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
