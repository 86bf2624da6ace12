"""Training against a slow, obviously correct reference written here from docs/model.md.

The reference loops over rows in plain Python and shares no code with the engine
(its banding is modelkit's, written from the band definitions in docs/model.md).
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from numpy.testing import assert_allclose
from sqlalchemy.exc import DBAPIError

from modelkit import BAND_COLUMNS, VALUES, fold_of, presentation_score, reference_bands
from woe_core import certify, demo, train
from woe_core.errors import CertificationRequired, InvalidParameter

DAY = timedelta(days=1)
T = (-0.15, -0.05, 0.05, 0.15)
CUTOFF = datetime(2026, 8, 1, tzinfo=UTC)


def _label(row, asof):
    t0, sold = row["t0"], row["sold_at"]
    if sold is not None and sold <= t0 + 21 * DAY and sold <= asof:
        return 0
    if t0 + 21 * DAY <= asof and (sold is None or sold > t0 + 21 * DAY):
        return 1
    return None


def _raw_rows(engine):
    with engine.connect() as conn:
        raw = pd.read_sql_query(sa.text("SELECT * FROM ml.woe_anchor_feature_store_t0_v1_v"), conn)
    raw = raw.astype(object).where(raw.notna(), None)
    return raw.to_dict("records")


def reference(rows, cutoff, h, eps, k, thresholds=T):
    """Everything docs/model.md says a model is, computed row by row."""
    data_end = max(max(r["t0"] for r in rows), max((r["sold_at"] for r in rows if r["sold_at"]), default=cutoff))
    train_rows, eval_rows = [], []
    for r in rows:
        if r["t0"] < cutoff:
            y = _label(r, cutoff)
            if y is not None:
                w = 0.5 ** ((cutoff - r["t0"]).total_seconds() / 86400 / h)
                train_rows.append({**r, "y": y, "w": w, "fold": fold_of(r["listing_id"], k)})
        else:
            y = _label(r, data_end)
            if y is not None:
                eval_rows.append({**r, "y": y, "w": 1.0})
    models = {}
    for m in list(range(k)) + [None]:
        fitted = [r for r in train_rows if m is None or r["fold"] != m]
        scores = sorted(s for s in (presentation_score(r) for r in fitted) if s is not None)
        c1, c2 = np.quantile(scores, [1 / 3, 2 / 3])
        W1 = sum(r["w"] for r in fitted if r["y"] == 1)
        W0 = sum(r["w"] for r in fitted if r["y"] == 0)
        p = W1 / (W1 + W0)
        base = math.log(p / (1 - p))
        sums: dict[tuple[str, str], list[float]] = {}
        for r in fitted:
            for band, value in reference_bands(r, thresholds, (c1, c2)).items():
                s = sums.setdefault((band, value), [0.0, 0.0, 0, 0])
                s[0 if r["y"] == 1 else 1] += r["w"]
                s[2 if r["y"] == 1 else 3] += 1
        woe = {bv: math.log((s[0] + eps * p) / (s[1] + eps * (1 - p))) - base for bv, s in sums.items()}
        models[m] = {"cuts": (c1, c2), "p": p, "base": base, "woe": woe, "sums": sums}
    oof = {}
    for r in train_rows:
        mod = models[r["fold"]]
        bands = reference_bands(r, thresholds, mod["cuts"])
        oof[(r["listing_id"], r["t0"])] = (
            r["fold"],
            r["y"],
            mod["base"] + sum(mod["woe"].get(bv, 0.0) for bv in bands.items()),
        )
    return {"models": models, "oof": oof, "train_rows": train_rows, "eval_rows": eval_rows}


def _auc(scores_labels):
    pos = [s for s, y in scores_labels if y == 1]
    neg = [s for s, y in scores_labels if y == 0]
    wins = sum(1.0 if a > b else 0.5 if a == b else 0.0 for a in pos for b in neg)
    return wins / (len(pos) * len(neg))


def _certified_demo(engine, n, seed):
    demo.load_demo(engine, n, seed=seed)
    assert certify.certify(engine, "t").passed
    return engine


@pytest.mark.parametrize(
    ("seed", "eps", "h", "k"),
    [(3, 1.0, 90.0, 5), (11, 0.25, 30.0, 2), (19, 5.0, 365.0, 3), (23, 2.0, 7.5, 4)],
)
def test_engine_matches_reference(engine, seed, eps, h, k):
    _certified_demo(engine, 300, seed)
    ref = reference(_raw_rows(engine), CUTOFF, h, eps, k)
    result = train.train(engine, train.TrainParams(CUTOFF, h, eps, k), "trainer")
    key = result.model_key
    with engine.connect() as conn:
        reg = (
            conn.execute(sa.text("SELECT * FROM ml.woe_anchor_model_registry_v1 WHERE model_key = :k"), {"k": key})
            .mappings()
            .one()
        )
        cuts = {
            r.fold_id: (r.c1, r.c2)
            for r in conn.execute(
                sa.text("SELECT fold_id, c1, c2 FROM ml.woe_anchor_cuts_v1 WHERE model_key = :k"), {"k": key}
            )
        }
        maps = conn.execute(
            sa.text(
                "SELECT fold_id, band_name, band_value, woe, w_pos, w_neg, n_pos, n_neg "
                "FROM ml.woe_anchor_map_v1 WHERE model_key = :k"
            ),
            {"k": key},
        ).all()
        scores = conn.execute(
            sa.text(
                "SELECT listing_id, t0, fold_id, is_oof, woe_logit, p_slow21, slow21 "
                "FROM ml.woe_anchor_scores_v1 WHERE model_key = :k"
            ),
            {"k": key},
        ).all()
    final = ref["models"][None]
    assert reg["base_rate"] == pytest.approx(final["p"], rel=1e-12)
    assert reg["base_logit"] == pytest.approx(final["base"], rel=1e-12, abs=1e-12)
    assert (reg["n_folds"], reg["eps"], reg["half_life_days"], reg["is_active"]) == (k, eps, h, False)
    assert reg["code_sha256"] == train.code_sha256()
    assert set(cuts) == set(range(k)) | {None}
    for m, model in ref["models"].items():
        assert_allclose(cuts[m], model["cuts"], rtol=1e-12)
        got = {(b, v): (w, w1, w0, n1, n0) for f, b, v, w, w1, w0, n1, n0 in maps if f == m}
        assert set(got) == set(model["woe"]), f"fold {m}: map keys differ"
        for bv, woe in model["woe"].items():
            s = model["sums"][bv]
            assert_allclose(got[bv][:3], [woe, s[0], s[1]], rtol=1e-9, atol=1e-12)
            assert got[bv][3:] == (s[2], s[3])
    assert len(scores) == len(ref["oof"]) == len(ref["train_rows"])
    for lid, t0, fold, is_oof, logit, p, y in scores:
        rfold, ry, rlogit = ref["oof"][(lid, t0)]
        assert (fold, y, is_oof) == (rfold, ry, True)
        assert logit == pytest.approx(rlogit, rel=1e-9, abs=1e-9)
        assert p == pytest.approx(1 / (1 + math.exp(-rlogit)), rel=1e-9)
    assert result.metrics["oof"]["auc"] == pytest.approx(_auc([(v[2], v[1]) for v in ref["oof"].values()]))
    counts = result.metrics["counts"]
    assert (counts["train_rows"], counts["eval_rows"]) == (len(ref["train_rows"]), len(ref["eval_rows"]))
    assert counts["train_weight"] == pytest.approx(sum(r["w"] for r in ref["train_rows"]))
    assert set(result.metrics["information_value"]) == set(VALUES)
    assert set(result.metrics["psi"]) == set(VALUES)


def _snapshot(conn, lid, t0, sold_at, **features):
    row = {
        "listing_id": lid,
        "generation": "iphone_13",
        "t0": t0,
        "delta": 0.0,
        "tier": "HIGH",
        "ships": True,
        "neg": True,
        "cond": "good",
        "dmg": 0.1,
        "bat": 92,
        "sold_at": sold_at,
        "asof": t0 - timedelta(hours=1),
    }
    row.update(features)
    conn.execute(
        sa.text(
            "INSERT INTO ml.socio_market_snapshots VALUES (:listing_id, :generation, :t0, :delta, :tier, :ships, :neg, "
            ":cond, :dmg, :bat, :sold_at, :asof)"
        ),
        row,
    )
    conn.execute(
        sa.text("INSERT INTO ml.iphone_image_features VALUES (:l, :t, 6, 0.5, 0.5, 0.5, 0.1, true, false)"),
        {"l": lid, "t": t0},
    )


def test_label_edge_cases(engine):
    c = CUTOFF
    cases = {  # listing_id: (t0, sold_at, expected label in TRAIN or None if not a TRAIN row)
        101: (c - 40 * DAY, c - 40 * DAY + 21 * DAY, 0),  # sold exactly at t0 + 21 days
        102: (c - 30 * DAY, c + 5 * DAY, 1),  # sold after the cutoff, past t0 + 21 days
        103: (c, None, None),  # t0 exactly at the cutoff: EVAL
        104: (c - 50 * DAY, None, 1),  # never sold
        105: (c - 10 * DAY, None, None),  # unresolved at C: t0 + 21 days > C
        106: (c - 10 * DAY, c + 2 * DAY, None),  # sells within 21 days but after C: unresolved
        107: (c - 60 * DAY, c - 30 * DAY, 1),  # sold, but after t0 + 21 days
        108: (c - 25 * DAY, c - 20 * DAY, 0),  # sold within 21 days, before C
        109: (c - 45 * DAY, c - 44 * DAY, 0),
        110: (c - 90 * DAY, None, 1),
    }
    with engine.begin() as conn:
        for lid, (t0, sold, _) in cases.items():
            _snapshot(conn, lid, t0, sold)
        _snapshot(conn, 111, c + 60 * DAY, None)  # keeps the data's time range beyond the cutoff
    assert certify.certify(engine, "t").passed
    result = train.train(engine, train.TrainParams(c, 30.0, 1.0, 2), "t")
    with engine.connect() as conn:
        got = dict(
            conn.execute(
                sa.text("SELECT listing_id, slow21 FROM ml.woe_anchor_scores_v1 WHERE model_key = :k"),
                {"k": result.model_key},
            ).all()
        )
    assert got == {lid: y for lid, (_, _, y) in cases.items() if y is not None}
    # EVAL rows are labelled at the data's newest timestamp: 103 (never sold, resolved 21 days on) and 111 is not
    assert result.metrics["counts"]["eval_rows"] == 1


def test_train_serve_parity(engine):
    _certified_demo(engine, 250, 5)
    key = train.train(engine, train.TrainParams(CUTOFF, 60.0, 1.0, 3), "t").model_key
    with engine.begin() as conn:
        conn.execute(sa.text("SELECT ml.promote_woe_anchor_model(:k, 'test', 'parity check')"), {"k": key})
    with engine.connect() as conn:
        active = conn.execute(sa.text("SELECT model_key FROM ml.woe_anchor_model_registry_v1 WHERE is_active"))
        assert active.scalars().all() == [key]
        base = conn.execute(
            sa.text("SELECT base_logit FROM ml.woe_anchor_model_registry_v1 WHERE model_key = :k"), {"k": key}
        ).scalar_one()
        fmap = {
            (f, b, v): w
            for f, b, v, w in conn.execute(
                sa.text("SELECT fold_id, band_name, band_value, woe FROM ml.woe_anchor_map_v1 WHERE model_key = :k"),
                {"k": key},
            )
        }
        live = pd.read_sql_query(sa.text("SELECT * FROM ml.woe_anchor_scores_live_train_v"), conn)
        stored = conn.execute(
            sa.text("SELECT listing_id, t0, fold_id, woe_logit FROM ml.woe_anchor_scores_v1 WHERE model_key = :k"),
            {"k": key},
        ).all()
    assert len(live) > 0 and (live["model_key"] == key).all()
    for row in live.to_dict("records"):
        expected = base + sum(fmap.get((None, b, row[col]), 0.0) for b, col in BAND_COLUMNS.items())
        assert row["woe_logit"] == pytest.approx(expected, abs=1e-9)
    # OOF: recompute from the stored fold maps (the fold base is implied by the map sums)
    by_key = {(r["listing_id"], r["t0"]): r for r in live.to_dict("records")}
    with engine.connect() as conn:
        fold_cuts = {
            f: (c1, c2)
            for f, c1, c2 in conn.execute(
                sa.text(
                    "SELECT fold_id, c1, c2 FROM ml.woe_anchor_cuts_v1 WHERE model_key = :k AND fold_id IS NOT NULL"
                ),
                {"k": key},
            )
        }
        sums = conn.execute(
            sa.text(
                "SELECT fold_id, sum(w_pos), sum(w_neg) FROM ml.woe_anchor_map_v1 WHERE model_key = :k "
                "AND fold_id IS NOT NULL AND band_name = 'dsold' GROUP BY fold_id"
            ),
            {"k": key},
        ).all()
    fold_base = {f: math.log(w1 / w0) for f, w1, w0 in sums}
    raw = {(r["listing_id"], r["t0"]): r for r in _raw_rows(engine)}
    assert stored
    for lid, t0, fold, logit in stored:
        bands = reference_bands(raw[(lid, t0)], T, fold_cuts[fold])
        expected = fold_base[fold] + sum(fmap.get((fold, b, v), 0.0) for b, v in bands.items())
        assert logit == pytest.approx(expected, abs=1e-9)
        assert (lid, t0) in by_key


def test_an_error_after_some_artifacts_leaves_no_trace(engine, monkeypatch):
    _certified_demo(engine, 150, 2)

    def boom(conn, key):
        raise RuntimeError(f"injected failure after writing registry, cuts and maps of {key}")

    monkeypatch.setattr(train, "_write_scores", boom)
    with pytest.raises(RuntimeError, match="injected failure"):
        train.train(engine, train.TrainParams(CUTOFF), "t")
    with engine.connect() as conn:
        for table in (
            "woe_anchor_model_registry_v1",
            "woe_anchor_cuts_v1",
            "woe_anchor_map_v1",
            "woe_anchor_scores_v1",
        ):
            assert conn.execute(sa.text(f"SELECT count(*) FROM ml.{table}")).scalar_one() == 0, table
        assert (
            conn.execute(
                sa.text("SELECT count(*) FROM pg_class WHERE starts_with(relname::text, 'woe_anchor_scores_v1__')")
            ).scalar_one()
            == 0
        )


def test_two_models_in_the_same_second_get_distinct_keys(engine, monkeypatch):
    _certified_demo(engine, 150, 2)
    monkeypatch.setattr(train, "_now", lambda: datetime(2026, 11, 27, 12, 0, 0, tzinfo=UTC))
    keys = [train.train(engine, train.TrainParams(CUTOFF), "t").model_key for _ in range(3)]
    assert keys == ["tom_aft_v1_20261127_120000", "tom_aft_v1_20261127_120000_2", "tom_aft_v1_20261127_120000_3"]


BAD = [
    ({"train_cutoff_ts": datetime(2026, 8, 1)}, "train_cutoff_ts must be a timezone-aware datetime"),
    ({"train_cutoff_ts": "2026-08-01"}, "got '2026-08-01'"),
    ({"half_life_days": 0}, r"half_life_days must be a finite number > 0 \(days\), got 0"),
    ({"half_life_days": -3.0}, "half_life_days must be .*got -3.0"),
    ({"half_life_days": float("nan")}, "half_life_days must be .*got nan"),
    ({"eps": 0.0}, "eps must be a finite number > 0 .*got 0.0"),
    ({"eps": float("inf")}, "eps must be .*got inf"),
    ({"n_folds": 1}, r"n_folds must be an integer from 2 to 50.*got 1"),
    ({"n_folds": 2.5}, "n_folds must be .*got 2.5"),
    ({"n_folds": True}, "n_folds must be .*got True"),
    ({"dsold_thresholds": (0.1, -0.1, 0.2, 0.3)}, r"dsold_thresholds must be four finite numbers, strictly increasing"),
    ({"dsold_thresholds": (0.0, 0.0, 0.1, 0.2)}, "strictly increasing"),
    ({"dsold_thresholds": (0.0, 0.1, 0.2)}, "strictly increasing.*got \\(0.0, 0.1, 0.2\\)"),
    ({"dsold_thresholds": (0.0, 0.1, float("nan"), 0.3)}, "dsold_thresholds must be"),
    ({"train_cutoff_ts": datetime(2020, 1, 1, tzinfo=UTC)}, "inside the data's t0 range.*got 2020-01-01"),
    ({"train_cutoff_ts": datetime(2030, 1, 1, tzinfo=UTC)}, "inside the data's t0 range.*got 2030-01-01"),
    ({"n_folds": 50}, "n_folds must be at most the number of TRAIN listings"),
]


@pytest.mark.parametrize(("change", "message"), BAD)
def test_bad_parameters_are_refused_before_any_write(engine, change, message):
    _certified_demo(engine, 30, 1)
    params = {"train_cutoff_ts": CUTOFF, **change}
    with pytest.raises(InvalidParameter, match=message):
        train.train(engine, train.TrainParams(**params), "t")
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM ml.woe_anchor_model_registry_v1")).scalar_one() == 0


def test_several_bad_values_are_all_named():
    with pytest.raises(InvalidParameter) as info:
        train.validate_params(train.TrainParams(CUTOFF, half_life_days=0, eps=-1, n_folds=1))
    assert all(name in str(info.value) for name in ("half_life_days", "eps", "n_folds"))


def test_uncertified_data_is_refused_with_how_to_certify(demo_engine):
    with pytest.raises(CertificationRequired, match="not certified.*python -m woe_core certify"):
        train.train(demo_engine, train.TrainParams(CUTOFF), "t")


def test_one_class_only_and_empty_train_are_clear_errors(engine):
    c = CUTOFF
    with engine.begin() as conn:
        for lid in range(1, 8):
            _snapshot(conn, lid, c - (30 + lid) * DAY, None)  # all unsold: slow21 = 1 only
        _snapshot(conn, 50, c + 30 * DAY, None)
    assert certify.certify(engine, "t").passed
    with pytest.raises(train.TrainingError, match="every TRAIN row has slow21 = 1"):
        train.train(engine, train.TrainParams(c, n_folds=2), "t")
    with pytest.raises(train.TrainingError, match="no TRAIN row is resolved"):
        train.train(engine, train.TrainParams(c - 36 * DAY, n_folds=2), "t")


def test_two_trainings_at_once_both_land(engine):
    import threading

    _certified_demo(engine, 200, 4)
    results, errors = [], []

    def run(h):
        try:
            results.append(train.train(engine, train.TrainParams(CUTOFF, h, 1.0, 3), "t").model_key)
        except Exception as exc:  # collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(h,)) for h in (30.0, 60.0)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert errors == [] and len(set(results)) == 2
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM ml.woe_anchor_model_registry_v1")).scalar_one() == 2


def test_a_tiny_half_life_does_not_underflow(engine):
    _certified_demo(engine, 200, 4)
    result = train.train(engine, train.TrainParams(CUTOFF, 0.05, 1.0, 2), "t")
    assert 0 < result.base_rate < 1 and result.metrics["counts"]["train_weight"] > 0


def test_a_fold_whose_outside_rows_hold_one_class_is_a_clear_error(engine):
    c = CUTOFF
    by_fold: dict[int, list[int]] = {0: [], 1: []}
    lid = 1
    while min(len(v) for v in by_fold.values()) < 4:
        by_fold[fold_of(lid, 2)].append(lid)
        lid += 1
    with engine.begin() as conn:
        for i in by_fold[0][:4]:
            _snapshot(conn, i, c - 40 * DAY, None)  # fold 0: never sold, slow21 = 1
        for i in by_fold[1][:4]:
            _snapshot(conn, i, c - 40 * DAY, c - 39 * DAY)  # fold 1: sold at once, slow21 = 0
        _snapshot(conn, 999, c + 30 * DAY, None)
    assert certify.certify(engine, "t").passed
    with pytest.raises(train.TrainingError, match="the TRAIN rows outside fold 0 have only slow21 = 0"):
        train.train(engine, train.TrainParams(c, 30.0, 1.0, 2), "t")
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM ml.woe_anchor_model_registry_v1")).scalar_one() == 0


def _metrics_reference(p: np.ndarray, y: np.ndarray) -> dict:
    from test_compare_window import calibration_reference

    q = np.clip(p, 1e-15, 1 - 1e-15)
    return {
        "n": len(y),
        "positive_rate": y.mean(),
        "auc": _auc(list(zip(p, y, strict=True))),
        "log_loss": -np.mean(y * np.log(q) + (1 - y) * np.log(1 - q)),
        "brier": np.mean((p - y) ** 2),
        "calibration": calibration_reference(p, y),
    }


def test_stored_metrics_match_the_scored_rows(engine):
    """OOF metrics from the stored OOF rows, EVAL metrics from the final model's live scores of the
    EVAL rows: the figures training aggregated in the database, recomputed here from rows."""
    _certified_demo(engine, 400, 5)
    result = train.train(engine, train.TrainParams(CUTOFF), "trainer")
    rows = reference(_raw_rows(engine), CUTOFF, 90.0, 1.0, 5)
    with engine.connect() as conn:
        oof = conn.execute(
            sa.text("SELECT p_slow21, slow21 FROM ml.woe_anchor_scores_v1 WHERE model_key = :k"),
            {"k": result.model_key},
        ).all()
        live = dict(
            conn.execute(
                sa.text(
                    "SELECT (listing_id, t0)::text, woe_anchor_p_slow21 FROM ml.woe_anchor_scores_by_model_train_v "
                    "WHERE model_key = :k AND t0 >= :c"
                ),
                {"k": result.model_key, "c": CUTOFF},
            ).all()
        )
        keys = conn.execute(
            sa.text("SELECT (listing_id, t0)::text, listing_id, t0 FROM ml.woe_anchor_feature_store_t0_v1_v")
        ).all()
    key_of = {(lid, t0): k for k, lid, t0 in keys}
    ev_p = np.array([live[key_of[(r["listing_id"], r["t0"])]] for r in rows["eval_rows"]], dtype=float)
    ev_y = np.array([r["y"] for r in rows["eval_rows"]], dtype=float)
    parts = {
        "oof": (np.array([r[0] for r in oof], dtype=float), np.array([r[1] for r in oof], dtype=float)),
        "eval": (ev_p, ev_y),
    }
    for part, (p, y) in parts.items():
        got, want = result.metrics[part], _metrics_reference(p, y)
        assert got["n"] == want["n"] > 100 and pd.Series(p).duplicated().any()  # ties occur
        for name in ("positive_rate", "auc", "log_loss", "brier"):
            assert got[name] == pytest.approx(want[name], rel=1e-10), (part, name)
        assert [c["n"] for c in got["calibration"]] == [c[0] for c in want["calibration"]]
        assert_allclose(
            [c["mean_predicted"] for c in got["calibration"]], [c[1] for c in want["calibration"]], rtol=1e-10
        )
        assert_allclose(
            [c["observed_rate"] for c in got["calibration"]], [c[2] for c in want["calibration"]], rtol=1e-10
        )


def _pg_order(v: float) -> tuple[bool, float]:
    return (math.isnan(v), 0.0 if math.isnan(v) else v)  # PostgreSQL sorts NaN above every number


@pytest.mark.parametrize(
    ("case", "fetch_limit"),
    [("crowded", 7), ("crowded", 50_000), ("constant", 3), ("specials_only", 3), ("two_values", 1)],
)
def test_order_statistics_are_exact_ranks(engine, monkeypatch, case, fetch_limit):
    """The cuts' order statistics (``train._order_statistics``) against a plain sort, including ties,
    NaN, ±Infinity and scores crowded into a sliver of the range (buckets split again)."""
    rng = np.random.default_rng(5)
    k = 4
    if case == "crowded":  # almost every score within 1e-9 of 0.5, a far outlier, many ties and specials
        scores = list(0.5 + rng.integers(0, 400, 600) * 1e-12) + [1e300, -3.0, math.inf, -math.inf, math.nan] * 3
    elif case == "constant":
        scores = [0.25] * 90
    elif case == "specials_only":
        scores = [math.nan, math.inf, -math.inf] * 20
    else:
        scores = [1.0, 2.0] * 40
    folds = rng.integers(0, k, len(scores))
    monkeypatch.setattr(train, "ORDER_STATISTIC_FETCH_LIMIT", fetch_limit)
    finite = [s for s in scores if math.isfinite(s)]
    finite_range = (min(finite), max(finite)) if finite else None
    expected: dict[tuple[int, int], float] = {}
    wanted: dict[int, list[int]] = {}
    for m in range(k + 1):
        mine = sorted((s for s, f in zip(scores, folds, strict=True) if m == k or f != m), key=_pg_order)
        wanted[m] = sorted({1, 2, len(mine) // 3, len(mine) // 2 + 1, len(mine) - 1, len(mine)} - {0})
        expected.update({(m, r): mine[r - 1] for r in wanted[m]})
    with engine.connect() as conn:  # the training rows of a transaction that is rolled back
        conn.execute(
            sa.text(
                f"INSERT INTO {train.TRAINING_ROWS} (listing_id, fold, is_train, y, w, presentation_score) "
                "VALUES (:i, :f, :t, 0, 1, :s)"
            ),
            [{"i": i, "f": int(f), "t": True, "s": s} for i, (s, f) in enumerate(zip(scores, folds, strict=True))]
            + [{"i": -1, "f": 0, "t": False, "s": -1e9}, {"i": -2, "f": 1, "t": True, "s": None}],  # left out
        )
        found = train._order_statistics(conn, wanted, k, len(scores), finite_range)
        conn.rollback()
    assert set(found) == set(expected)
    for key, want in expected.items():
        got = found[key]
        assert (math.isnan(got) and math.isnan(want)) or got == want, (key, got, want)


_FRACTIONS = [0.0, 0.1234, 1 / 3, 0.5, 2 / 3, 0.9, 1.0]


def _percentile_cases() -> dict[str, list[float | None]]:
    rng = np.random.default_rng(11)
    near_one = 1.0 + rng.integers(0, 10**9, 120_000) * 1e-12  # one first digit holds them all: split by digits
    return {
        "specials": [-math.inf, -1e308, -2.0, -1.0, -5e-324, -0.0, 0.0, 5e-324, 1.0, 2.0, 1e308, math.inf, math.nan],
        "crowded": list(near_one) + [math.nan, None, -math.inf, 3.0],
        "crowded_negative": list(-near_one[:60_000]),
        "ties": [0.5] * 70_000 + list(rng.normal(size=30_000)),
        "signed_zeros": [-0.0, 0.0] * 50 + [1e-320, -1e-320],
        "one": [7.25],
        "two": [1.0, 3.0],
        "huge": [-1.7e308, 1.7e308, 1.7e308, 1e308],
        "nulls_only": [None, None],
    }


@pytest.mark.parametrize("case", sorted(_percentile_cases()))
def test_the_databases_percentiles_from_counts_equal_percentile_cont(engine, case):
    """``ml.woe_percentile_cont`` (the derive's cuts on Citus, counted on the shards) selects the
    values ``percentile_cont`` interpolates between, across ±0, subnormals, ±Infinity, NaN,
    ties and scores crowded into one first digit (split by the next digits)."""
    values = _percentile_cases()[case]
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TEMP TABLE scores (v float8)"))
        conn.execute(sa.text("INSERT INTO scores SELECT unnest(CAST(:v AS float8[]))"), {"v": values})
        got = conn.execute(
            sa.text("SELECT * FROM ml.woe_percentile_cont('SELECT v FROM pg_temp.scores', CAST(:f AS float8[]))"),
            {"f": _FRACTIONS},
        ).one()
        want = conn.execute(
            sa.text("SELECT percentile_cont(CAST(:f AS float8[])) WITHIN GROUP (ORDER BY v), count(v) FROM scores"),
            {"f": _FRACTIONS},
        ).one()
    assert got.n == want.count == sum(v is not None for v in values)
    if want[0] is None:
        assert got.percentiles is None
        return
    assert len(got.percentiles) == len(_FRACTIONS)
    for g, w in zip(got.percentiles, want[0], strict=True):
        assert (math.isnan(g) and math.isnan(w)) or g == w, (got.percentiles, want[0])


@pytest.mark.parametrize("fractions", [[1.5], [-0.1], [None], []])
def test_the_databases_percentiles_name_a_bad_fraction(engine, fractions):
    with pytest.raises(DBAPIError, match="percentile fractions must be between 0 and 1, got"), engine.connect() as conn:
        conn.execute(
            sa.text("SELECT * FROM ml.woe_percentile_cont('SELECT 1.0::float8 AS v', CAST(:f AS float8[]))"),
            {"f": fractions},
        )


def test_the_databases_percentiles_refuse_values_that_changed_between_their_scans(engine):
    """On Citus each level's count is a statement of its own (READ COMMITTED on the shards): here the
    source itself loses its smallest value after the first scan, and the count that no longer adds up
    is refused rather than ranked."""
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TEMP SEQUENCE scans"))
        conn.execute(
            sa.text("CREATE TEMP TABLE scores AS SELECT 1 + g * 2.0 ^ -40 AS v FROM generate_series(0, 59999) AS g")
        )
        source = "SELECT v FROM pg_temp.scores WHERE (SELECT nextval('pg_temp.scans')) = 1 OR v <> 1"
        with pytest.raises(
            DBAPIError,
            match=r"the values changed while their percentiles were being counted: the range "
            r"\[1, [0-9.]+\] held 60000 values, then 59999",
        ) as refused:
            conn.execute(sa.text("SELECT * FROM ml.woe_percentile_cont(:s, ARRAY[0.5])"), {"s": source})
    assert refused.value.orig.sqlstate == "40001"  # serialization_failure: run it again
