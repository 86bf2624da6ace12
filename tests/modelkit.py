"""Hand-written models for tests, and an independent Python reference of the banding in docs/model.md.

Nothing here imports woe_core's banding: the reference is written from the documentation
text so that it can catch the SQL getting a boundary wrong.
"""

from __future__ import annotations

import math

import sqlalchemy as sa


def fold_of(listing_id: int, k: int) -> int:
    """Fold of a listing: one MINSTD step of ``|listing_id| mod (2**31 - 1)``, then ``mod k`` (Python ints, exact)."""
    return ((abs(listing_id) % 2147483647) * 48271 % 2147483647) % k


BAND_COLUMNS = {
    "dsold": "dsold_band",
    "trust": "trust_tier",
    "ship": "ship_band",
    "sale": "sale_band",
    "cond": "cond_band",
    "dmg": "dmg_ai_band",
    "bat": "bat_band",
    "present": "presentation_band",
    "vdmg": "vdmg_band",
    "acc": "accessories_band",
}
VALUES = {
    "dsold": ["dSold_under", "dSold_low", "dSold_fair", "dSold_high", "dSold_over", "dSold_missing"],
    "trust": ["HIGH", "MEDIUM", "LOW", "NEW", "trust_missing"],
    "ship": ["shipping_ok", "shipping_no", "ship_missing"],
    "sale": ["sale_negotiable", "sale_fixed", "sale_missing"],
    "cond": ["cond_new", "cond_like_new", "cond_good", "cond_fair", "cond_parts", "cond_missing"],
    "dmg": ["dmg_ai_hi", "dmg_ai_mid", "dmg_ai_lo", "dmg_ai_missing"],
    "bat": ["bat_90p", "bat_80_89", "bat_lt80", "bat_missing"],
    "present": ["present_lo", "present_mid", "present_hi", "present_missing"],
    "vdmg": ["vdmg_hi", "vdmg_mid", "vdmg_lo", "vdmg_missing"],
    "acc": ["acc_full", "acc_partial", "acc_none", "acc_missing"],
}


def handwritten_map(skip: set[tuple[str, str]] = frozenset()) -> dict[tuple[str, str], float]:
    """A distinct, sign-alternating WOE for every band value, except those in ``skip``."""
    out = {}
    for i, (band, values) in enumerate(VALUES.items()):
        for j, value in enumerate(values):
            if (band, value) not in skip:
                out[(band, value)] = round((-1) ** (i + j) * (0.05 * (i + 1) + 0.013 * j), 6)
    return out


def insert_model(
    conn,
    key: str,
    woe: dict,
    *,
    active: bool = False,
    base_logit: float = -0.4,
    cuts: tuple[float, float] = (0.45, 0.6),
    thresholds=(-0.15, -0.05, 0.05, 0.15),
) -> None:
    """Register a hand-written model with final cuts and the final map ``woe``.

    A fixture, not a promotion. With ``active=True`` it uses the owner's recorded
    break-glass (a row in ``audit.break_glass_log``, for every model, in the
    caller's transaction) so that it may write an active row without a
    certification or a history row, and the test may switch ``is_active`` by hand
    in the same transaction. Such a model is hand-written, so promotion refuses
    it (the certified data does not reproduce it); code under test promotes
    models that training produced, through woe_core.promote.
    """
    if active:
        break_glass(conn, "test fixture: a hand-written active model")
    base_rate = 1.0 / (1.0 + math.exp(-base_logit))
    conn.execute(
        sa.text(
            "INSERT INTO ml.woe_anchor_model_registry_v1 (model_key, train_cutoff_ts, half_life_days, eps, n_folds, "
            "band_schema_version, code_sha256, is_active, base_rate, base_logit, dsold_t1, dsold_t2, dsold_t3, dsold_t4, "
            "created_by) VALUES (:k, '2026-06-01T00:00Z', 60, 1, 5, 1, :sha, :a, :br, :bl, :t1, :t2, :t3, :t4, 'test')"
        ),
        {
            "k": key,
            "sha": "0" * 64,
            "a": active,
            "br": base_rate,
            "bl": base_logit,
            "t1": thresholds[0],
            "t2": thresholds[1],
            "t3": thresholds[2],
            "t4": thresholds[3],
        },
    )
    conn.execute(
        sa.text(
            "INSERT INTO ml.woe_anchor_cuts_v1 (model_key, fold_id, c1, c2, n_rows) VALUES (:k, NULL, :c1, :c2, 0)"
        ),
        {"k": key, "c1": cuts[0], "c2": cuts[1]},
    )
    conn.execute(
        sa.text(
            "INSERT INTO ml.woe_anchor_map_v1 (model_key, fold_id, band_name, band_value, woe, w_pos, w_neg, n_pos, n_neg) "
            "VALUES (:k, NULL, :b, :v, :w, 1, 1, 1, 1)"
        ),
        [{"k": key, "b": b, "v": v, "w": w} for (b, v), w in woe.items()],
    )


DEFAULT_CUTOFF = "2026-08-01T00:00:00Z"


def derived_model(
    conn,
    key: str,
    *,
    half_life: float = 60.0,
    eps: float = 1.0,
    cutoff: str = DEFAULT_CUTOFF,
    thresholds=(-0.15, -0.05, 0.05, 0.15),
    created_by: str = "test",
) -> None:
    """Register the model that the certified data produces for these hyperparameters.

    Its final cuts, base and final map come from the database's own derivation
    (``ml.woe_anchor_derive_v1``, which promotion's provenance check compares
    with), so it passes provenance like a trained model; it has no fold maps and
    no scores. Distinct half-lives give distinct models, under keys the test chooses.
    """
    rows = (
        conn.execute(
            sa.text("SELECT * FROM ml.woe_anchor_derive_v1(CAST(:c AS timestamptz), :h, :e, :t1, :t2, :t3, :t4)"),
            {
                "c": cutoff,
                "h": half_life,
                "e": eps,
                "t1": thresholds[0],
                "t2": thresholds[1],
                "t3": thresholds[2],
                "t4": thresholds[3],
            },
        )
        .mappings()
        .all()
    )
    one = {r["item"]: r for r in rows if r["item"] != "map"}
    conn.execute(
        sa.text(
            "INSERT INTO ml.woe_anchor_model_registry_v1 (model_key, train_cutoff_ts, half_life_days, eps, n_folds, "
            "band_schema_version, code_sha256, is_active, base_rate, base_logit, dsold_t1, dsold_t2, dsold_t3, dsold_t4, "
            "created_by) VALUES (:k, CAST(:c AS timestamptz), :h, :e, 5, 1, :sha, false, :br, :bl, :t1, :t2, :t3, :t4, "
            ":by)"
        ),
        {
            "k": key,
            "c": cutoff,
            "h": half_life,
            "e": eps,
            "sha": "0" * 64,
            "br": one["base_rate"]["value"],
            "bl": one["base_logit"]["value"],
            "t1": thresholds[0],
            "t2": thresholds[1],
            "t3": thresholds[2],
            "t4": thresholds[3],
            "by": created_by,
        },
    )
    conn.execute(
        sa.text(
            "INSERT INTO ml.woe_anchor_cuts_v1 (model_key, fold_id, c1, c2, n_rows) VALUES (:k, NULL, :c1, :c2, :n)"
        ),
        {"k": key, "c1": one["c1"]["value"], "c2": one["c2"]["value"], "n": one["c1"]["n_pos"]},
    )
    conn.execute(
        sa.text(
            "INSERT INTO ml.woe_anchor_map_v1 (model_key, fold_id, band_name, band_value, woe, w_pos, w_neg, n_pos, n_neg) "
            "VALUES (:k, NULL, :b, :v, :w, :w1, :w0, :n1, :n0)"
        ),
        [
            {
                "k": key,
                "b": r["band_name"],
                "v": r["band_value"],
                "w": r["value"],
                "w1": r["w_pos"],
                "w0": r["w_neg"],
                "n1": r["n_pos"],
                "n0": r["n_neg"],
            }
            for r in rows
            if r["item"] == "map"
        ],
    )


def backdated_certification(conn, dataset: str, age: str, passed: bool = True, checks: str = "[]") -> None:
    """Record a certification ``age`` old: the owner's break-glass (a logged reason, and switching
    off the stamp trigger for one insert, which DDL is itself logged in audit.break_glass_log)."""
    break_glass(conn, f"test: a certification {age} old")
    conn.execute(sa.text("ALTER TABLE audit.dataset_certifications DISABLE TRIGGER dataset_certifications_stamp"))
    conn.execute(
        sa.text(
            "INSERT INTO audit.dataset_certifications (dataset, certified_at, certified_by, passed, checks) "
            "VALUES (:d, now() - CAST(:age AS interval), 't', :p, CAST(:c AS jsonb))"
        ),
        {"d": dataset, "age": age, "p": passed, "c": checks},
    )
    conn.execute(sa.text("ALTER TABLE audit.dataset_certifications ENABLE ALWAYS TRIGGER dataset_certifications_stamp"))


def break_glass(conn, reason: str, model_key: str | None = None) -> None:
    """The owner's documented break-glass: log why, then change governed rows in the same transaction."""
    conn.execute(
        sa.text("INSERT INTO audit.break_glass_log (model_key, reason) VALUES (:k, :r)"), {"k": model_key, "r": reason}
    )


def _missing(x) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x))


def reference_bands(row: dict, thresholds, cuts) -> dict[str, str]:
    """Band values of one entrypoint row, straight from the band table of docs/model.md."""
    t1, t2, t3, t4 = thresholds
    d = row["delta_vs_sold_median_30d"]
    dsold = (
        "dSold_missing"
        if _missing(d)
        else "dSold_under"
        if d < t1
        else "dSold_low"
        if d < t2
        else "dSold_fair"
        if d < t3
        else "dSold_high"
        if d < t4
        else "dSold_over"
    )
    tier = row["seller_trust_tier"]
    trust = tier if tier in ("HIGH", "MEDIUM", "LOW", "NEW") else "trust_missing"
    ship = "ship_missing" if row["ships"] is None else "shipping_ok" if row["ships"] else "shipping_no"
    sale = "sale_missing" if row["negotiable"] is None else "sale_negotiable" if row["negotiable"] else "sale_fixed"
    cond = {
        "new": "cond_new",
        "like_new": "cond_like_new",
        "good": "cond_good",
        "fair": "cond_fair",
        "for_parts": "cond_parts",
    }.get(row["item_condition"], "cond_missing")

    def prob(prefix, p):
        return (
            f"{prefix}_missing"
            if _missing(p)
            else f"{prefix}_hi"
            if p >= 0.5
            else (f"{prefix}_mid" if p >= 0.2 else f"{prefix}_lo")
        )

    b = row["battery_health_pct"]
    bat = "bat_missing" if _missing(b) else "bat_90p" if b >= 90 else "bat_80_89" if b >= 80 else "bat_lt80"
    score = presentation_score(row)
    c1, c2 = cuts
    present = (
        "present_missing"
        if score is None
        else "present_lo"
        if score < c1
        else "present_mid"
        if score < c2
        else "present_hi"
    )
    if not row["has_image_row"] or (row["has_box"] is None and row["has_charger"] is None):
        acc = "acc_missing"
    else:
        seen = bool(row["has_box"]) + bool(row["has_charger"])
        acc = {2: "acc_full", 1: "acc_partial", 0: "acc_none"}[seen]
    return {
        "dsold": dsold,
        "trust": trust,
        "ship": ship,
        "sale": sale,
        "cond": cond,
        "dmg": prob("dmg_ai", row["dmg_ai_prob"]),
        "bat": bat,
        "present": present,
        "vdmg": prob("vdmg", row["vision_damage_prob"]),
        "acc": acc,
    }


def presentation_score(row: dict) -> float | None:
    parts = [row["n_photos"], row["photo_quality"], row["lighting"], row["background_clean"]]
    if not row["has_image_row"] or any(_missing(p) for p in parts):
        return None
    n, q, light, bg = parts
    return 0.4 * q + 0.3 * light + 0.2 * bg + 0.1 * min(n, 10) / 10


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))
