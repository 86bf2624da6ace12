"""Deterministic synthetic second-hand iPhone marketplace for demos, tests and benchmarks.

The generator fills the two base tables of the p_slow21 model,
``ml.socio_market_snapshots`` and ``ml.iphone_image_features``.  A listing is
published once and about 35% of listings are edited 1-3 times afterwards; every
publication or edit is one snapshot ``(listing_id, t0)``.  The target of the model,
slow21, is "the listing is still unsold 21 days after the snapshot time t0".

Ground truth
------------
Every snapshot has a linear predictor on the log-odds scale of slow21::

    eta = intercept + sum over bands of GROUND_TRUTH[band][band value] + drift

Positive effects mean *slower* (more likely still unsold after 21 days).  Band
names and band values are those of the SQL banding (``ml.woe_band_*``); the
directions are:

* ``dsold`` - ``delta_vs_sold_median_30d`` cut at -0.15, -0.05, 0.05, 0.15
  (dSold_under, _low, _fair, _high, _over; lower bounds inclusive): the higher
  the asking price versus the market, the slower.
* ``trust`` - ``seller_trust_tier``: HIGH fastest, then MEDIUM, LOW, NEW slowest.
* ``ship`` - shipping offered (shipping_ok) is faster than pick-up only (shipping_no).
* ``sale`` - a negotiable price is faster than a fixed price.
* ``cond`` - ``item_condition``: new fastest, like_new, good, fair, for_parts
  slowest (a moderate effect: parts phones have their own buyers).
* ``dmg`` - ``dmg_ai_prob`` lo (< 0.2), mid ([0.2, 0.5)), hi (>= 0.5): damage is slower.
* ``bat`` - ``battery_health_pct`` >= 90 fastest, 80-89, < 80 slowest.
* ``present`` - ``presentation_score = 0.4*photo_quality + 0.3*lighting
  + 0.2*background_clean + 0.1*least(n_photos, 10)/10`` cut at 0.50 and 0.62
  (present_lo, _mid, _hi): better photos are faster.
* ``vdmg`` - ``vision_damage_prob`` with the ``dmg`` cut points: damage is slower.
* ``acc`` - box and charger seen in the photos (a null flag counts as not
  seen): both (acc_full) fastest, one (acc_partial), none (acc_none) slowest.

Every band also has a missing value (null feature; for the image bands also "no
image row for the snapshot", and for ``acc`` both flags null), which is mildly
slower than average.  The exact effects are in ``GROUND_TRUTH``.

Drift: ``eta`` gets ``+GROUND_TRUTH["drift_per_year"] * (first publication -
window start) / 365 days``, i.e. listings published later in the window sell
somewhat slower (+0.3 on the logit scale over a one year window).

Sale times: let ``s = sigmoid(eta)`` and ``c = GROUND_TRUTH["never_sell_share"]``.
A listing never sells with probability ``c * s`` (computed at its first
snapshot); otherwise its time to sale follows a piecewise exponential law whose
hazard, from each snapshot until the next edit, is ``lambda = -ln(s (1 - c) /
(1 - c s)) / 21`` per day with ``s`` taken from that snapshot.  Without edits
this gives exactly ``P(unsold 21 days after publication) = sigmoid(eta)``; price
cuts in edits raise the hazard from the edit on.  ``sold_at`` is the first
publication plus the time to sale, or null when that is later than the data
extraction time ``end`` (default ``DEMO_END``).  Edits happen before ``sold_at``
and before ``end``; an edit that would fall later never happens.

The intercept is set so that the slow21 base rate over all snapshots with
``t0 + 21 days <= end`` is about 0.42 (0.35-0.5 depending on the seed and size).

Features are mildly correlated as in a real marketplace: older generations are
more worn (worse condition, lower battery health), ``dmg_ai_prob`` and
``vision_damage_prob`` share a latent damage that is higher for fair and
for_parts phones, trusted sellers ship more often and take better photos, and
newer phones more often still have their box and charger.
"""

from __future__ import annotations

import functools
import math
import numbers
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd
import psycopg
import sqlalchemy
from psycopg.copy import QueuedLibpqWriter

__all__ = ["DEMO_END", "GROUND_TRUTH", "DemoData", "generate_demo", "load_demo"]

DEMO_END: datetime = datetime(2026, 11, 1, tzinfo=UTC)
"""Fixed data extraction time of the demo data."""

SOCIO_TABLE = "ml.socio_market_snapshots"
IMAGE_TABLE = "ml.iphone_image_features"

SOCIO_COLUMNS: tuple[str, ...] = (
    "listing_id",
    "generation",
    "t0",
    "delta_vs_sold_median_30d",
    "seller_trust_tier",
    "ships",
    "negotiable",
    "item_condition",
    "dmg_ai_prob",
    "battery_health_pct",
    "sold_at",
    "feature_asof_ts",
)
IMAGE_COLUMNS: tuple[str, ...] = (
    "listing_id",
    "t0",
    "n_photos",
    "photo_quality",
    "lighting",
    "background_clean",
    "vision_damage_prob",
    "has_box",
    "has_charger",
)

# Band cut points (lower bound inclusive) used by the ground truth.
DSOLD_EDGES = (-0.15, -0.05, 0.05, 0.15)
DMG_EDGES = (0.2, 0.5)
BAT_EDGES = (80.0, 90.0)
PRESENT_EDGES = (0.50, 0.62)

# Band names and values follow the SQL banding (ml.woe_band_* functions); values
# are listed from the lowest to the highest bin, the missing value last.
GROUND_TRUTH: dict[str, Any] = {
    "intercept": -0.38,
    "drift_per_year": 0.30,
    "never_sell_share": 0.15,
    "dsold": {
        "dSold_under": -0.80,
        "dSold_low": -0.40,
        "dSold_fair": 0.00,
        "dSold_high": 0.35,
        "dSold_over": 0.75,
        "dSold_missing": 0.10,
    },
    "trust": {"HIGH": -0.40, "MEDIUM": -0.10, "LOW": 0.20, "NEW": 0.45, "trust_missing": 0.15},
    "ship": {"shipping_ok": -0.25, "shipping_no": 0.20, "ship_missing": 0.05},
    "sale": {"sale_negotiable": -0.20, "sale_fixed": 0.15, "sale_missing": 0.00},
    "cond": {
        "cond_new": -0.40,
        "cond_like_new": -0.20,
        "cond_good": 0.00,
        "cond_fair": 0.20,
        "cond_parts": 0.45,
        "cond_missing": 0.10,
    },
    "dmg": {"dmg_ai_lo": -0.15, "dmg_ai_mid": 0.10, "dmg_ai_hi": 0.35, "dmg_ai_missing": 0.05},
    "bat": {"bat_lt80": 0.30, "bat_80_89": 0.00, "bat_90p": -0.20, "bat_missing": 0.05},
    "present": {"present_lo": 0.30, "present_mid": 0.00, "present_hi": -0.30, "present_missing": 0.25},
    "vdmg": {"vdmg_lo": -0.10, "vdmg_mid": 0.10, "vdmg_hi": 0.30, "vdmg_missing": 0.05},
    "acc": {"acc_none": 0.20, "acc_partial": 0.00, "acc_full": -0.20, "acc_missing": 0.05},
}
"""Ground-truth log-odds effects (positive = slower) per band value, plus the
intercept, the yearly drift and the share of never-selling listings."""

GENERATIONS: tuple[str, ...] = (
    "iphone_11",
    "iphone_12",
    "iphone_13",
    "iphone_14",
    "iphone_15",
    "iphone_16",
)
_GEN_PROBS = np.array([0.10, 0.15, 0.21, 0.22, 0.19, 0.13])
_GEN_AGE_YEARS = np.array([7.0, 6.0, 5.0, 4.0, 3.0, 2.0])

TRUST_TIERS: tuple[str, ...] = ("HIGH", "MEDIUM", "LOW", "NEW")
_TRUST_PROBS = np.array([0.22, 0.36, 0.22, 0.18, 0.02])  # last: null
_TRUST_SHIP_P = np.array([0.80, 0.66, 0.52, 0.45, 0.55])
_TRUST_EFFORT = np.array([0.40, 0.10, -0.15, -0.35, 0.0])

CONDITIONS: tuple[str, ...] = ("new", "like_new", "good", "fair", "for_parts")
_WEAR_CUTS = np.array([-0.35, 0.95, 2.25, 3.45])  # latent wear -> condition
_COND_DAMAGE = np.array([-3.4, -2.7, -1.9, -0.6, 0.9, -1.8])  # last: null condition
_COND_PRICE = np.array([0.06, 0.03, 0.0, -0.03, -0.06, 0.0])

_DAY = 86_400
_CHUNK_ROWS = 40_000


@dataclass(frozen=True)
class DemoData:
    """Synthetic base-table contents, columns in table order."""

    socio: pd.DataFrame
    images: pd.DataFrame


def _check_n_listings(n_listings: object) -> int:
    """Return ``n_listings`` as int or raise ``ValueError``."""
    if (
        isinstance(n_listings, bool | np.bool_)
        or not isinstance(n_listings, numbers.Integral)
        or n_listings <= 0
    ):
        raise ValueError(f"n_listings must be a positive integer, got {n_listings!r}")
    return int(n_listings)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _effects(band: str) -> np.ndarray:
    """Effects of ``band`` in definition order (``missing`` last)."""
    return np.array(list(GROUND_TRUTH[band].values()), dtype=np.float64)


def _numeric_band_effect(band: str, x: np.ndarray, edges: tuple[float, ...]) -> np.ndarray:
    """Effect of a numeric feature cut at ``edges`` (labels ascending); NaN maps to ``missing``."""
    eff = _effects(band)
    nbins = len(edges) + 1
    idx = np.searchsorted(np.asarray(edges), x, side="right")
    idx = np.where(np.isnan(x), nbins, idx)
    return eff[idx]


def _bool_effect(band: str, value: np.ndarray, null: np.ndarray) -> np.ndarray:
    """Effect of a boolean feature; band labels are yes, no, missing."""
    eff = _effects(band)
    return np.where(null, eff[2], np.where(value, eff[0], eff[1]))


def _with_nulls(rng: np.random.Generator, shape: int | tuple[int, ...], p: float) -> np.ndarray:
    return rng.random(shape) < p


def _bool_series(values: np.ndarray, null: np.ndarray) -> pd.arrays.BooleanArray:
    return pd.arrays.BooleanArray(values.astype(bool), null.astype(bool))


def _str_series(labels: tuple[str, ...], codes: np.ndarray) -> pd.Series:
    """Labels by code; code ``len(labels)`` is null."""
    cat = pd.Categorical.from_codes(np.where(codes >= len(labels), -1, codes), categories=list(labels))
    return pd.Series(cat).astype("str")


def _utc(seconds: np.ndarray, null: np.ndarray | None = None) -> pd.Series:
    """Epoch seconds to tz-aware UTC timestamps (microsecond unit)."""
    arr = seconds.astype("datetime64[s]").astype("datetime64[us]")
    if null is not None:
        arr[null] = np.datetime64("NaT")
    return pd.Series(pd.DatetimeIndex(arr).tz_localize("UTC"))


def _check_end(end: datetime, days: int) -> int:
    if not isinstance(end, datetime) or end.tzinfo is None or end.utcoffset() is None:
        raise ValueError(f"end must be a timezone-aware datetime, got {end!r}")
    if isinstance(days, bool) or not isinstance(days, numbers.Integral) or days <= 0:
        raise ValueError(f"days must be a positive integer, got {days!r}")
    return math.floor(end.timestamp())


def generate_demo(
    n_listings: int, *, seed: int = 7, end: datetime = DEMO_END, days: int = 365
) -> DemoData:
    """Generate ``n_listings`` listings (about 1.5 snapshots each), deterministic per seed."""
    n = _check_n_listings(n_listings)
    end_s = _check_end(end, days)
    rng = np.random.default_rng(seed)
    max_snaps = 4

    # Publication times: mild upward trend in volume (density 1 + 0.5 x over the
    # window), listing ids assigned in publication order.
    a = 0.5
    u = np.sort(rng.random(n))
    frac = (np.sqrt(1.0 + 2.0 * a * u * (1.0 + a / 2.0)) - 1.0) / a
    start_s = end_s - days * _DAY
    pub_s = start_s + np.floor(frac * (days * _DAY - 1)).astype(np.int64)
    listing_id = 10_000_000 + np.arange(n, dtype=np.int64)

    # Generation, wear, condition, damage, battery.
    gen = rng.choice(len(GENERATIONS), size=n, p=_GEN_PROBS)
    age = _GEN_AGE_YEARS[gen]
    wear = 0.35 * age + rng.normal(0.0, 1.0, n)
    cond = np.searchsorted(_WEAR_CUTS, wear)
    cond = np.where(_with_nulls(rng, n, 0.03), len(CONDITIONS), cond)
    damage = _COND_DAMAGE[cond] + rng.normal(0.0, 0.8, n)
    dmg = np.round(_sigmoid(damage + rng.normal(0.0, 0.6, n)), 4)
    dmg[_with_nulls(rng, n, 0.03)] = np.nan

    battery = 101.0 - 3.0 * age - 1.2 * np.clip(wear, 0.0, None) + rng.normal(0.0, 3.5, n)
    battery = np.where(cond == 0, 100.0, battery)
    battery = np.where(cond == 4, battery - rng.exponential(12.0, n), battery)
    battery = np.clip(np.round(battery), 0, 100).astype(np.int16)
    bat_null = _with_nulls(rng, n, 0.04) | ((cond == 0) & _with_nulls(rng, n, 0.5))

    # Seller.
    trust = rng.choice(len(_TRUST_PROBS), size=n, p=_TRUST_PROBS)
    ships = rng.random(n) < _TRUST_SHIP_P[trust]
    ships_null = _with_nulls(rng, n, 0.03)
    negotiable0 = rng.random(n) < 0.6
    neg_null = _with_nulls(rng, n, 0.03)

    # Asking price versus the 30 day sold median of the generation.
    delta0 = _COND_PRICE[cond] + rng.normal(0.02, 0.14, n) + rng.exponential(0.05, n) - 0.05
    delta_null = _with_nulls(rng, n, 0.03)

    # Photos: seller effort drives quality, lighting, background and photo count.
    effort = _TRUST_EFFORT[trust] + rng.normal(0.0, 1.0, n)
    photo_quality = np.round(_sigmoid(0.35 + 0.8 * effort + rng.normal(0.0, 0.5, n)), 4)
    lighting = np.round(_sigmoid(0.25 + 0.6 * effort + rng.normal(0.0, 0.7, n)), 4)
    background = np.round(_sigmoid(0.6 * effort + rng.normal(0.0, 0.9, n)), 4)
    n_photos0 = np.clip(np.round(4.5 + 1.6 * effort + rng.normal(0.0, 1.6, n)), 1, 12).astype(np.int16)
    vdmg = np.round(_sigmoid(damage + 0.3 + rng.normal(0.0, 0.6, n)), 4)
    vdmg[_with_nulls(rng, n, 0.04)] = np.nan
    acc_latent = rng.normal(0.0, 1.0, n)
    has_box = rng.random(n) < _sigmoid(2.0 - 0.45 * age + 0.7 * acc_latent)
    has_charger = rng.random(n) < _sigmoid(0.8 - 0.35 * age + 0.7 * acc_latent)
    acc_both_null = _with_nulls(rng, n, 0.05)
    box_null = acc_both_null | _with_nulls(rng, n, 0.03)
    charger_null = acc_both_null | _with_nulls(rng, n, 0.03)
    img_missing_listing = _with_nulls(rng, n, 0.06)

    # Candidate edits (kept only if before the sale and before `end`).
    n_edits = np.where(rng.random(n) < 0.42, rng.choice([1, 2, 3], size=n, p=[0.5, 0.3, 0.2]), 0)
    gaps = np.clip(rng.lognormal(math.log(2.5 * _DAY), 1.0, (n, max_snaps - 1)), 2 * 3600, 20 * _DAY)
    offset_s = np.zeros((n, max_snaps), dtype=np.int64)
    offset_s[:, 1:] = np.cumsum(np.floor(gaps).astype(np.int64), axis=1)
    slot = np.arange(max_snaps)
    cand = slot[None, :] <= n_edits[:, None]
    is_cut = rng.random((n, max_snaps)) < 0.85
    change = np.where(is_cut, -rng.uniform(0.02, 0.12, (n, max_snaps)), rng.normal(0.0, 0.015, (n, max_snaps)))
    change[:, 0] = 0.0
    delta = np.round(np.clip(delta0[:, None] + np.cumsum(change, axis=1), -0.9, 1.5), 4)
    delta[delta_null] = np.nan
    neg_flip = np.cumsum(rng.random((n, max_snaps)) < np.where(slot > 0, 0.12, 0.0), axis=1) > 0
    negotiable = negotiable0[:, None] | neg_flip
    add_photo = rng.random((n, max_snaps)) < np.where(slot > 0, 0.2, 0.0)
    n_photos = np.minimum(n_photos0[:, None] + np.cumsum(add_photo, axis=1), 12).astype(np.int16)
    img_missing = img_missing_listing[:, None] | _with_nulls(rng, (n, max_snaps), 0.025)

    # Ground-truth linear predictor per snapshot slot.
    eta_listing = (
        GROUND_TRUTH["intercept"]
        + GROUND_TRUTH["drift_per_year"] * (pub_s - start_s) / (365.0 * _DAY)
        + _effects("trust")[trust]
        + _bool_effect("ship", ships, ships_null)
        + _effects("cond")[cond]
        + _numeric_band_effect("dmg", dmg, DMG_EDGES)
        + _numeric_band_effect("bat", np.where(bat_null, np.nan, battery.astype(np.float64)), BAT_EDGES)
    )
    presentation = (
        0.4 * photo_quality[:, None]
        + 0.3 * lighting[:, None]
        + 0.2 * background[:, None]
        + 0.1 * np.minimum(n_photos, 10) / 10.0
    )
    n_acc = np.where(box_null, False, has_box).astype(int) + np.where(charger_null, False, has_charger).astype(int)
    acc_eff = np.where(acc_both_null, _effects("acc")[3], _effects("acc")[n_acc])
    img_eff = (
        _numeric_band_effect("present", presentation, PRESENT_EDGES)
        + _numeric_band_effect("vdmg", vdmg, DMG_EDGES)[:, None]
        + acc_eff[:, None]
    )
    img_eff = np.where(img_missing, _effects("present")[-1] + _effects("vdmg")[-1] + _effects("acc")[-1], img_eff)
    eta = (
        eta_listing[:, None]
        + _numeric_band_effect("dsold", delta, DSOLD_EDGES)
        + _bool_effect("sale", negotiable, neg_null[:, None])
        + img_eff
    )

    # Time to sale: piecewise exponential over the segments between edits.
    c = GROUND_TRUTH["never_sell_share"]
    s = _sigmoid(eta)
    rate = -np.log(s * (1.0 - c) / (1.0 - c * s)) / 21.0  # per day
    seg_start = offset_s / _DAY
    seg_end = np.full((n, max_snaps), np.inf)
    seg_end[:, :-1] = np.where(cand[:, 1:], seg_start[:, 1:], np.inf)
    seg_h = np.where(cand, rate * np.where(cand, seg_end - seg_start, 0.0), 0.0)
    h_end = np.cumsum(seg_h, axis=1)
    h_start = np.zeros_like(h_end)
    h_start[:, 1:] = h_end[:, :-1]
    e = rng.exponential(1.0, n)
    k = np.argmax(h_end > e[:, None], axis=1)
    rows = np.arange(n)
    t_sale = seg_start[rows, k] + (e - h_start[rows, k]) / rate[rows, k]
    t_sale = np.where(rng.random(n) < c * s[:, 0], np.inf, t_sale)
    sold_exact = pub_s + t_sale * _DAY
    sold_null = ~(sold_exact <= end_s)
    sold_s = np.ceil(np.where(sold_null, 0.0, sold_exact)).astype(np.int64)

    # Realised snapshots.
    t0_all = pub_s[:, None] + offset_s
    keep = cand & (offset_s < t_sale[:, None] * _DAY) & (t0_all < end_s)
    keep[:, 0] = True
    li, sk = np.nonzero(keep)
    m = li.size
    t0_s = t0_all[li, sk]
    asof_s = t0_s - np.minimum(60 + np.floor(rng.exponential(3 * 3600.0, m)).astype(np.int64), 36 * 3600)

    socio = pd.DataFrame(
        {
            "listing_id": listing_id[li],
            "generation": _str_series(GENERATIONS, gen[li]),
            "t0": _utc(t0_s),
            "delta_vs_sold_median_30d": delta[li, sk],
            "seller_trust_tier": _str_series(TRUST_TIERS, trust[li]),
            "ships": _bool_series(ships[li], ships_null[li]),
            "negotiable": _bool_series(negotiable[li, sk], neg_null[li]),
            "item_condition": _str_series(CONDITIONS, cond[li]),
            "dmg_ai_prob": dmg[li],
            "battery_health_pct": pd.arrays.IntegerArray(battery[li], bat_null[li].copy()),
            "sold_at": _utc(sold_s[li], sold_null[li]),
            "feature_asof_ts": _utc(asof_s),
        },
        columns=list(SOCIO_COLUMNS),
    )

    has_img = ~img_missing[li, sk]
    il, isk = li[has_img], sk[has_img]
    images = pd.DataFrame(
        {
            "listing_id": listing_id[il],
            "t0": _utc(t0_s[has_img]),
            "n_photos": n_photos[il, isk],
            "photo_quality": photo_quality[il],
            "lighting": lighting[il],
            "background_clean": background[il],
            "vision_damage_prob": vdmg[il],
            "has_box": _bool_series(has_box[il], box_null[il]),
            "has_charger": _bool_series(has_charger[il], charger_null[il]),
        },
        columns=list(IMAGE_COLUMNS),
    )
    return DemoData(socio=socio, images=images)


_STR = np.dtypes.StringDType()


def _csv_label(value: str) -> str:
    """One CSV field for a text value (quoted when needed, so '' is not NULL)."""
    if value == "" or any(ch in value for ch in ',"\n\r\\') or value != value.strip():
        return '"' + value.replace('"', '""') + '"'
    return value


def _format_float(values: np.ndarray, null: np.ndarray) -> np.ndarray:
    """Exact text for float64 values; short decimals are written as mantissa + exponent."""
    finite = np.where(null, 0.0, values)
    if np.isfinite(finite).all():
        for decimals in range(7):
            head = finite[:64]
            if not np.array_equal(np.round(head, decimals), head):
                continue
            mantissa = np.rint(finite * 10.0**decimals)
            if np.all(np.abs(mantissa) < 2**53) and np.array_equal(np.round(finite, decimals), finite):
                text = mantissa.astype(np.int64).astype(_STR)
                return np.strings.add(text, f"e-{decimals}") if decimals else text
    text = finite.astype(_STR)
    text = np.where(np.isnan(finite), "NaN", text)
    return np.where(np.isposinf(finite), "Infinity", np.where(np.isneginf(finite), "-Infinity", text))


@functools.cache
def _time_of_day_text() -> np.ndarray:
    """' HH:MM:SS+00' for every second of a day."""
    return np.array(
        [f" {h:02d}:{m:02d}:{sec:02d}+00" for h in range(24) for m in range(60) for sec in range(60)],
        dtype=_STR,
    )


def _format_timestamp(col: pd.Series, null: np.ndarray) -> np.ndarray:
    """ISO text with a +00 offset for timestamps (naive values are taken as UTC)."""
    us = col.to_numpy(dtype="datetime64[us]").view(np.int64)
    us = np.where(null, 0, us)
    if np.any(us % 1_000_000):
        text = np.datetime_as_string(us.view("datetime64[us]"), unit="us").astype(_STR)
        return np.strings.add(text, "+00")
    sec = us // 1_000_000
    days, inverse = np.unique(sec // _DAY, return_inverse=True)
    day_text = np.datetime_as_string(days.astype("datetime64[D]")).astype(_STR)
    return np.strings.add(day_text[inverse], _time_of_day_text()[sec % _DAY])


def _format_column(col: pd.Series) -> np.ndarray:
    """CSV field text (StringDType) of one column; nulls become empty fields."""
    dtype = col.dtype
    null = col.isna().to_numpy()
    if isinstance(dtype, pd.DatetimeTZDtype) or pd.api.types.is_datetime64_dtype(dtype):
        text = _format_timestamp(col, null)
    elif pd.api.types.is_bool_dtype(dtype):
        codes = np.where(null, 2, col.to_numpy(dtype=bool, na_value=False).astype(np.int8))
        return np.array(["f", "t", ""], dtype=_STR)[codes]
    elif pd.api.types.is_integer_dtype(dtype):
        text = col.to_numpy(dtype=np.int64, na_value=0).astype(_STR)
    elif pd.api.types.is_float_dtype(dtype):
        text = _format_float(col.to_numpy(dtype=np.float64, na_value=np.nan), null)
    else:
        codes, uniques = pd.factorize(col, use_na_sentinel=True)
        labels = [_csv_label(str(v)) for v in uniques] + [""]
        return np.array(labels, dtype=_STR)[codes]
    return np.where(null, "", text).astype(_STR)


def _csv_chunk(df: pd.DataFrame) -> str:
    """CSV text of ``df`` for COPY: no header, nulls as empty unquoted fields."""
    line = _format_column(df.iloc[:, 0])
    for name in df.columns[1:]:
        line = np.strings.add(np.strings.add(line, ","), _format_column(df[name]))
    return "\n".join(line.tolist()) + "\n"


def _copy_frame(cursor: psycopg.Cursor[Any], table: str, df: pd.DataFrame) -> int:
    """COPY ``df`` into ``table`` in CSV chunks of a few MB; return the number of rows."""
    cols = ", ".join(df.columns)
    sql = f"COPY {table} ({cols}) FROM STDIN WITH (FORMAT csv)"
    with cursor.copy(sql, writer=QueuedLibpqWriter(cursor)) as copy:
        for start in range(0, len(df), _CHUNK_ROWS):
            copy.write(_csv_chunk(df.iloc[start : start + _CHUNK_ROWS]).encode())
    return len(df)


def load_demo(engine: sqlalchemy.Engine, n_listings: int, *, seed: int = 7) -> dict[str, int]:
    """Replace the contents of both base tables with ``generate_demo(n_listings, seed=seed)``.

    Truncation and both COPY loads run in one transaction.
    """
    n = _check_n_listings(n_listings)
    data = generate_demo(n, seed=seed)
    with engine.begin() as conn:
        raw = conn.connection.driver_connection
        if not isinstance(raw, psycopg.Connection):
            raise TypeError(f"load_demo needs a psycopg 3 engine (postgresql+psycopg://), got driver {engine.driver!r}")
        with raw.cursor() as cur:
            cur.execute(f"TRUNCATE {SOCIO_TABLE}, {IMAGE_TABLE}")
            socio_rows = _copy_frame(cur, SOCIO_TABLE, data.socio)
            image_rows = _copy_frame(cur, IMAGE_TABLE, data.images)
    return {"socio_rows": socio_rows, "image_rows": image_rows}
