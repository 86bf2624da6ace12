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
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd
import psycopg
import sqlalchemy
from psycopg.copy import QueuedLibpqWriter

from . import db
from .errors import DatabaseUnavailable, InvalidParameter, OutOfResources

__all__ = ["DEMO_END", "GROUND_TRUTH", "DemoData", "generate_demo", "iter_demo", "load_demo", "space_check"]

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
_MAX_SNAPSHOTS = 4  # publication + at most 3 edits
_CHUNK_ROWS = 40_000  # rows per COPY write (about 5 MB of CSV)
CHUNK_LISTINGS = 100_000
"""Listings generated and loaded at a time (about 155,000 snapshots)."""


@dataclass(frozen=True)
class DemoData:
    """Synthetic base-table contents, columns in table order."""

    socio: pd.DataFrame
    images: pd.DataFrame


def _check_n_listings(n_listings: object) -> int:
    """Return ``n_listings`` as int or raise ``InvalidParameter``."""
    if isinstance(n_listings, bool | np.bool_) or not isinstance(n_listings, numbers.Integral) or n_listings <= 0:
        raise InvalidParameter(f"n_listings must be a positive integer, got {n_listings!r}")
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
    """Effect of a boolean feature; the band lists the true, false and missing values in that order."""
    eff = _effects(band)
    return np.where(null, eff[2], np.where(value, eff[0], eff[1]))


def _chance(rng: np.random.Generator, shape: int | tuple[int, ...], p: float) -> np.ndarray:
    """Independent Bernoulli(p) mask (used mostly for null masks)."""
    return rng.random(shape) < p


def _bool_series(values: np.ndarray, null: np.ndarray) -> pd.arrays.BooleanArray:
    return pd.arrays.BooleanArray(values.astype(bool), null.astype(bool))


def _str_series(labels: tuple[str, ...], codes: np.ndarray) -> pd.Series:
    """Labels by code; code ``len(labels)`` is null."""
    # An object column holding None for a missing value: ``astype("str")`` of a
    # categorical writes the text 'nan' there on pandas 2.x and a real null on 3.x.
    values = np.array([*labels, None], dtype=object)
    return pd.Series(values[np.minimum(codes, len(labels))], dtype=object)


def _utc(seconds: np.ndarray, null: np.ndarray | None = None) -> pd.Series:
    """Epoch seconds to tz-aware UTC timestamps (microsecond unit)."""
    arr = seconds.astype("datetime64[s]").astype("datetime64[us]")
    if null is not None:
        arr[null] = np.datetime64("NaT")
    return pd.Series(pd.DatetimeIndex(arr).tz_localize("UTC"))


def _check_end(end: datetime, days: int) -> int:
    if not isinstance(end, datetime) or end.tzinfo is None or end.utcoffset() is None:
        raise InvalidParameter(f"end must be a timezone-aware datetime, got {end!r}")
    if isinstance(days, bool) or not isinstance(days, numbers.Integral) or days <= 0:
        raise InvalidParameter(f"days must be a positive integer, got {days!r}")
    return math.floor(end.timestamp())


def _draw_listings(
    rng: np.random.Generator, first: int, n: int, n_total: int, start_s: int, window_s: int
) -> dict[str, np.ndarray]:
    """Listing-level features of listings ``first .. first + n - 1`` of ``n_total`` (one value per
    listing, shared by its snapshots)."""
    f: dict[str, np.ndarray] = {}
    # Publication: mild upward trend in volume (density 1 + 0.5 x over the window);
    # listing ids are assigned in publication order. Listing i draws its quantile u
    # uniformly in [i, i + 1) / n_total (stratified), so that any chunk of listings can
    # be drawn on its own and the ids still follow publication order across chunks.
    a = 0.5
    u = (first + np.arange(n) + rng.random(n)) / n_total
    frac = (np.sqrt(1.0 + 2.0 * a * u * (1.0 + a / 2.0)) - 1.0) / a
    f["pub_s"] = start_s + np.floor(frac * (window_s - 1)).astype(np.int64)
    f["listing_id"] = 10_000_000 + first + np.arange(n, dtype=np.int64)

    # Generation, wear, condition, damage, battery.
    f["gen"] = gen = rng.choice(len(GENERATIONS), size=n, p=_GEN_PROBS)
    age = _GEN_AGE_YEARS[gen]
    wear = 0.35 * age + rng.normal(0.0, 1.0, n)
    cond = np.searchsorted(_WEAR_CUTS, wear)
    f["cond"] = cond = np.where(_chance(rng, n, 0.03), len(CONDITIONS), cond)
    damage = _COND_DAMAGE[cond] + rng.normal(0.0, 0.8, n)
    dmg = np.round(_sigmoid(damage + rng.normal(0.0, 0.6, n)), 4)
    dmg[_chance(rng, n, 0.03)] = np.nan
    f["dmg"] = dmg
    battery = 101.0 - 3.0 * age - 1.2 * np.clip(wear, 0.0, None) + rng.normal(0.0, 3.5, n)
    battery = np.where(cond == 0, 100.0, battery)
    battery = np.where(cond == 4, battery - rng.exponential(12.0, n), battery)
    f["battery"] = np.clip(np.round(battery), 0, 100).astype(np.int16)
    f["bat_null"] = _chance(rng, n, 0.04) | ((cond == 0) & _chance(rng, n, 0.5))

    # Seller.
    f["trust"] = trust = rng.choice(len(_TRUST_PROBS), size=n, p=_TRUST_PROBS)
    f["ships"] = rng.random(n) < _TRUST_SHIP_P[trust]
    f["ships_null"] = _chance(rng, n, 0.03)
    f["negotiable"] = rng.random(n) < 0.6
    f["neg_null"] = _chance(rng, n, 0.03)

    # Asking price versus the 30 day sold median of the generation.
    f["delta"] = _COND_PRICE[cond] + rng.normal(0.02, 0.14, n) + rng.exponential(0.05, n) - 0.05
    f["delta_null"] = _chance(rng, n, 0.03)

    # Photos: seller effort drives quality, lighting, background and photo count.
    effort = _TRUST_EFFORT[trust] + rng.normal(0.0, 1.0, n)
    f["photo_quality"] = np.round(_sigmoid(0.35 + 0.8 * effort + rng.normal(0.0, 0.5, n)), 4)
    f["lighting"] = np.round(_sigmoid(0.25 + 0.6 * effort + rng.normal(0.0, 0.7, n)), 4)
    f["background"] = np.round(_sigmoid(0.6 * effort + rng.normal(0.0, 0.9, n)), 4)
    f["n_photos"] = np.clip(np.round(4.5 + 1.6 * effort + rng.normal(0.0, 1.6, n)), 1, 12).astype(np.int16)
    vdmg = np.round(_sigmoid(damage + 0.3 + rng.normal(0.0, 0.6, n)), 4)
    vdmg[_chance(rng, n, 0.04)] = np.nan
    f["vdmg"] = vdmg
    acc_latent = rng.normal(0.0, 1.0, n)
    f["has_box"] = rng.random(n) < _sigmoid(2.0 - 0.45 * age + 0.7 * acc_latent)
    f["has_charger"] = rng.random(n) < _sigmoid(0.8 - 0.35 * age + 0.7 * acc_latent)
    f["acc_null"] = acc_both_null = _chance(rng, n, 0.05)
    f["box_null"] = acc_both_null | _chance(rng, n, 0.03)
    f["charger_null"] = acc_both_null | _chance(rng, n, 0.03)
    f["img_missing"] = _chance(rng, n, 0.06)
    return f


def _draw_edits(rng: np.random.Generator, f: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Candidate snapshots per listing, shape (n, _MAX_SNAPSHOTS); slot 0 is the publication.

    An edit is kept later only if it falls before the sale and before ``end``.
    """
    n, k = f["pub_s"].shape[0], _MAX_SNAPSHOTS
    slot = np.arange(k)
    e: dict[str, np.ndarray] = {}
    n_edits = np.where(rng.random(n) < 0.42, rng.choice([1, 2, 3], size=n, p=[0.5, 0.3, 0.2]), 0)
    gaps = np.clip(rng.lognormal(math.log(2.5 * _DAY), 1.0, (n, k - 1)), 2 * 3600, 20 * _DAY)
    offset_s = np.zeros((n, k), dtype=np.int64)
    offset_s[:, 1:] = np.cumsum(np.floor(gaps).astype(np.int64), axis=1)
    e["offset_s"] = offset_s
    e["cand"] = slot[None, :] <= n_edits[:, None]
    # Most edits are price cuts; the rest move the price a little.
    is_cut = rng.random((n, k)) < 0.85
    change = np.where(is_cut, -rng.uniform(0.02, 0.12, (n, k)), rng.normal(0.0, 0.015, (n, k)))
    change[:, 0] = 0.0
    delta = np.round(np.clip(f["delta"][:, None] + np.cumsum(change, axis=1), -0.9, 1.5), 4)
    delta[f["delta_null"]] = np.nan
    e["delta"] = delta
    later = np.where(slot > 0, 1.0, 0.0)
    e["negotiable"] = f["negotiable"][:, None] | (np.cumsum(rng.random((n, k)) < 0.12 * later, axis=1) > 0)
    add_photo = rng.random((n, k)) < 0.2 * later
    e["n_photos"] = np.minimum(f["n_photos"][:, None] + np.cumsum(add_photo, axis=1), 12).astype(np.int16)
    e["img_missing"] = f["img_missing"][:, None] | _chance(rng, (n, k), 0.025)
    return e


def _linear_predictor(f: dict[str, np.ndarray], e: dict[str, np.ndarray], start_s: int) -> np.ndarray:
    """Ground-truth log-odds of slow21 per candidate snapshot, shape (n, _MAX_SNAPSHOTS)."""
    battery = np.where(f["bat_null"], np.nan, f["battery"].astype(np.float64))
    eta_listing = (
        GROUND_TRUTH["intercept"]
        + GROUND_TRUTH["drift_per_year"] * (f["pub_s"] - start_s) / (365.0 * _DAY)
        + _effects("trust")[f["trust"]]
        + _bool_effect("ship", f["ships"], f["ships_null"])
        + _effects("cond")[f["cond"]]
        + _numeric_band_effect("dmg", f["dmg"], DMG_EDGES)
        + _numeric_band_effect("bat", battery, BAT_EDGES)
    )
    presentation = (
        0.4 * f["photo_quality"][:, None]
        + 0.3 * f["lighting"][:, None]
        + 0.2 * f["background"][:, None]
        + 0.1 * np.minimum(e["n_photos"], 10) / 10.0
    )
    seen = np.where(f["box_null"], False, f["has_box"]).astype(int)
    seen += np.where(f["charger_null"], False, f["has_charger"]).astype(int)
    acc = _effects("acc")
    image = (
        _numeric_band_effect("present", presentation, PRESENT_EDGES)
        + _numeric_band_effect("vdmg", f["vdmg"], DMG_EDGES)[:, None]
        + np.where(f["acc_null"], acc[-1], acc[seen])[:, None]
    )
    no_image = _effects("present")[-1] + _effects("vdmg")[-1] + acc[-1]
    return (
        eta_listing[:, None]
        + _numeric_band_effect("dsold", e["delta"], DSOLD_EDGES)
        + _bool_effect("sale", e["negotiable"], f["neg_null"][:, None])
        + np.where(e["img_missing"], no_image, image)
    )


def _time_to_sale(rng: np.random.Generator, eta: np.ndarray, e: dict[str, np.ndarray]) -> np.ndarray:
    """Days from publication to sale (inf: never sells); piecewise exponential between edits."""
    n = eta.shape[0]
    c = GROUND_TRUTH["never_sell_share"]
    s = _sigmoid(eta)
    rate = -np.log(s * (1.0 - c) / (1.0 - c * s)) / 21.0  # per day
    cand = e["cand"]
    seg_start = e["offset_s"] / _DAY
    seg_end = np.full(eta.shape, np.inf)
    seg_end[:, :-1] = np.where(cand[:, 1:], seg_start[:, 1:], np.inf)
    seg_hazard = np.where(cand, rate * np.where(cand, seg_end - seg_start, 0.0), 0.0)
    h_end = np.cumsum(seg_hazard, axis=1)
    h_start = np.zeros_like(h_end)
    h_start[:, 1:] = h_end[:, :-1]
    budget: np.ndarray = rng.exponential(1.0, size=(n,))
    k = np.argmax(h_end > budget[:, None], axis=1)
    rows = np.arange(n)
    t_sale = seg_start[rows, k] + (budget - h_start[rows, k]) / rate[rows, k]
    return np.where(rng.random(n) < c * s[:, 0], np.inf, t_sale)


def generate_demo(n_listings: int, *, seed: int = 7, end: datetime = DEMO_END, days: int = 365) -> DemoData:
    """Generate ``n_listings`` listings (about 1.55 snapshots each), deterministic per seed.

    Holds every row in memory: for large sizes use ``iter_demo``, which yields the
    same rows chunk by chunk.
    """
    chunks = list(iter_demo(n_listings, seed=seed, end=end, days=days))
    return DemoData(
        socio=pd.concat([c.socio for c in chunks], ignore_index=True),
        images=pd.concat([c.images for c in chunks], ignore_index=True),
    )


def iter_demo(n_listings: int, *, seed: int = 7, end: datetime = DEMO_END, days: int = 365) -> Iterator[DemoData]:
    """The rows of ``generate_demo`` in chunks of ``CHUNK_LISTINGS`` listings, in listing order.

    Each chunk is drawn from its own random stream (seed, chunk number), so the
    data depend only on the seed and the size, and memory stays that of one chunk
    at any size.
    """
    n = _check_n_listings(n_listings)
    end_s = _check_end(end, days)
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise InvalidParameter(f"seed must be a non-negative integer, got {seed!r}")
    for number, first in enumerate(range(0, n, CHUNK_LISTINGS)):
        rng = np.random.default_rng([int(seed), number])
        yield _generate_chunk(rng, first, min(CHUNK_LISTINGS, n - first), n, end_s, days)


def _generate_chunk(rng: np.random.Generator, first: int, n: int, n_total: int, end_s: int, days: int) -> DemoData:
    start_s = end_s - days * _DAY
    f = _draw_listings(rng, first, n, n_total, start_s, days * _DAY)
    e = _draw_edits(rng, f)
    t_sale = _time_to_sale(rng, _linear_predictor(f, e, start_s), e)

    pub_s = f["pub_s"]
    sold_exact = pub_s + t_sale * _DAY
    sold_null = ~(sold_exact <= end_s)
    sold_s = np.ceil(np.where(sold_null, 0.0, sold_exact)).astype(np.int64)

    # Realised snapshots: candidates before the sale and before `end`.
    t0_all = pub_s[:, None] + e["offset_s"]
    keep = e["cand"] & (e["offset_s"] < t_sale[:, None] * _DAY) & (t0_all < end_s)
    keep[:, 0] = True
    li, sk = np.nonzero(keep)
    t0_s = t0_all[li, sk]
    lag_s = np.minimum(60 + np.floor(rng.exponential(3 * 3600.0, li.size)).astype(np.int64), 36 * 3600)

    socio = pd.DataFrame(
        {
            "listing_id": f["listing_id"][li],
            "generation": _str_series(GENERATIONS, f["gen"][li]),
            "t0": _utc(t0_s),
            "delta_vs_sold_median_30d": e["delta"][li, sk],
            "seller_trust_tier": _str_series(TRUST_TIERS, f["trust"][li]),
            "ships": _bool_series(f["ships"][li], f["ships_null"][li]),
            "negotiable": _bool_series(e["negotiable"][li, sk], f["neg_null"][li]),
            "item_condition": _str_series(CONDITIONS, f["cond"][li]),
            "dmg_ai_prob": f["dmg"][li],
            "battery_health_pct": pd.arrays.IntegerArray(f["battery"][li], f["bat_null"][li]),
            "sold_at": _utc(sold_s[li], sold_null[li]),
            "feature_asof_ts": _utc(t0_s - lag_s),
        },
        columns=list(SOCIO_COLUMNS),
    )

    has_image = ~e["img_missing"][li, sk]
    il, isk = li[has_image], sk[has_image]
    images = pd.DataFrame(
        {
            "listing_id": f["listing_id"][il],
            "t0": _utc(t0_s[has_image]),
            "n_photos": e["n_photos"][il, isk],
            "photo_quality": f["photo_quality"][il],
            "lighting": f["lighting"][il],
            "background_clean": f["background"][il],
            "vision_damage_prob": f["vdmg"][il],
            "has_box": _bool_series(f["has_box"][il], f["box_null"][il]),
            "has_charger": _bool_series(f["has_charger"][il], f["charger_null"][il]),
        },
        columns=list(IMAGE_COLUMNS),
    )
    return DemoData(socio=socio, images=images)


# CSV encoding for COPY.  Every column becomes an (n, width) uint8 matrix of ASCII
# or UTF-8 text padded with NUL bytes anywhere in the field; the matrices are laid
# side by side with separators and the NUL bytes are dropped, which leaves the CSV
# text.  A null is an all-NUL field, i.e. an empty unquoted field (COPY's NULL).
_COMMA, _NEWLINE = ord(","), ord("\n")


def _csv_label(value: str) -> bytes:
    """One CSV field for a text value, quoted when needed (so that '' is not NULL)."""
    if value == "" or any(ch in value for ch in ',"\n\r\\') or value != value.strip():
        value = '"' + value.replace('"', '""') + '"'
    return value.encode()


def _text_matrix(text: np.ndarray) -> np.ndarray:
    """Fixed-width bytes array (dtype S) as an (n, width) uint8 matrix."""
    text = np.ascontiguousarray(text)
    return text.view(np.uint8).reshape(text.shape[0], text.dtype.itemsize)


def _int_matrix(values: np.ndarray, null: np.ndarray) -> np.ndarray:
    """Decimal digits of int64 values (sign column first, leading zeros as NUL)."""
    magnitude = np.abs(values.astype(np.int64)).astype(np.uint64)
    width = len(str(int(magnitude.max(initial=0))))
    out = np.zeros((values.shape[0], width + 1), dtype=np.uint8)
    out[:, 0] = np.where(values < 0, ord("-"), 0)
    rest = magnitude
    for pos in range(width, 0, -1):
        digit = (rest % 10).astype(np.uint8) + ord("0")
        out[:, pos] = np.where((rest > 0) | (pos == width), digit, 0)
        rest = rest // 10
    out[null] = 0
    return out


def _float_matrix(values: np.ndarray, null: np.ndarray) -> np.ndarray:
    """Exact text of float64 values; short decimals are written as mantissa + exponent."""
    finite = np.where(null, 0.0, values)
    if np.isfinite(finite).all() and np.abs(finite).max(initial=0.0) < 1e12:
        for decimals in range(7):
            head = finite[:64]
            if not np.array_equal(np.round(head, decimals), head):
                continue
            mantissa = np.rint(finite * 10.0**decimals)
            if np.all(np.abs(mantissa) < 2**53) and np.array_equal(np.round(finite, decimals), finite):
                digits = _int_matrix(mantissa.astype(np.int64), null)
                if not decimals:
                    return digits
                exponent = np.frombuffer(f"e-{decimals}".encode(), dtype=np.uint8)
                return np.hstack([digits, np.where(null[:, None], 0, exponent[None, :]).astype(np.uint8)])
    text = finite.astype("S32")  # shortest round-trip repr
    text = np.where(np.isnan(finite), b"NaN", text)
    text = np.where(np.isposinf(finite), b"Infinity", np.where(np.isneginf(finite), b"-Infinity", text))
    out = _text_matrix(text.astype("S32")).copy()
    out[null] = 0
    return out


@functools.cache
def _time_of_day_text() -> np.ndarray:
    """b' HH:MM:SS+00' for every second of a day."""
    return np.array(
        [f" {h:02d}:{m:02d}:{sec:02d}+00".encode() for h in range(24) for m in range(60) for sec in range(60)],
        dtype="S12",
    )


def _timestamp_matrix(col: pd.Series, null: np.ndarray) -> np.ndarray:
    """ISO text with a +00 offset (naive timestamps are taken as UTC)."""
    us = np.where(null, 0, col.to_numpy(dtype="datetime64[us]").view(np.int64))
    if np.any(us % 1_000_000):
        text = np.datetime_as_string(us.view("datetime64[us]"), unit="us").astype("S26")
        out = np.hstack([_text_matrix(text), np.zeros((len(us), 3), dtype=np.uint8)])
        out[:, -3:] = np.frombuffer(b"+00", dtype=np.uint8)
    else:
        sec = us // 1_000_000
        days, inverse = np.unique(sec // _DAY, return_inverse=True)
        day_text = np.datetime_as_string(days.astype("datetime64[D]")).astype("S10")
        out = np.hstack([_text_matrix(day_text[inverse]), _text_matrix(_time_of_day_text()[sec % _DAY])])
    out[null] = 0
    return out


def _column_matrix(col: pd.Series) -> np.ndarray:
    """CSV field bytes of one column as an (n, width) uint8 matrix."""
    dtype = col.dtype
    null = col.isna().to_numpy()
    if isinstance(dtype, pd.DatetimeTZDtype) or pd.api.types.is_datetime64_dtype(dtype):
        return _timestamp_matrix(col, null)
    if pd.api.types.is_bool_dtype(dtype):
        codes = np.where(null, 2, col.to_numpy(dtype=bool, na_value=False).astype(np.int8))
        return _text_matrix(np.array([b"f", b"t", b""], dtype="S1")[codes])
    if pd.api.types.is_integer_dtype(dtype):
        return _int_matrix(col.to_numpy(dtype=np.int64, na_value=0), null)
    if pd.api.types.is_float_dtype(dtype):
        return _float_matrix(col.to_numpy(dtype=np.float64, na_value=np.nan), null)
    codes, uniques = pd.factorize(col, use_na_sentinel=True)
    labels = [_csv_label(str(v)) for v in uniques] + [b""]
    return _text_matrix(np.array(labels, dtype=f"S{max(map(len, labels), default=1) or 1}")[codes])


def _csv_chunk(df: pd.DataFrame) -> bytes:
    """CSV bytes of ``df`` for COPY: no header, nulls as empty unquoted fields."""
    blocks = [_column_matrix(df[name]) for name in df.columns]
    out = np.zeros((len(df), sum(b.shape[1] + 1 for b in blocks)), dtype=np.uint8)
    pos = 0
    for block in blocks:
        width = block.shape[1]
        out[:, pos : pos + width] = block
        out[:, pos + width] = _COMMA
        pos += width + 1
    out[:, -1] = _NEWLINE
    return out[out != 0].tobytes()


def _copy_frame(cursor: psycopg.Cursor[Any], table: str, df: pd.DataFrame) -> int:
    """COPY ``df`` into ``table`` in CSV chunks of a few MB; return the number of rows."""
    cols = ", ".join(df.columns)
    sql = f"COPY {table} ({cols}) FROM STDIN WITH (FORMAT csv)"
    with cursor.copy(sql, writer=QueuedLibpqWriter(cursor)) as copy:
        for start in range(0, len(df), _CHUNK_ROWS):
            copy.write(_csv_chunk(df.iloc[start : start + _CHUNK_ROWS]))
    return len(df)


SNAPSHOTS_PER_LISTING = 1.555
"""Measured ratio of the generator (seed 7, 643,087 listings: 999,794 snapshots)."""
TABLE_BYTES_PER_SNAPSHOT = 265
"""Both base tables with their indexes, per snapshot, measured after loading 999,794 snapshots."""
WAL_BYTES_PER_SNAPSHOT = 300
"""Write-ahead log written per snapshot by the load (measured the same way); the server
recycles it from about ``max_wal_size`` on."""
SPACE_MARGIN = 1.2
CHUNK_MEMORY_BYTES = 300 * 2**20
"""Peak memory of the whole `demo` process (225 MB measured at 1M snapshots, VmHWM), rounded up."""


@dataclass(frozen=True)
class SpaceCheck:
    """Free space where the server keeps the tables and the write-ahead log, against the estimate."""

    needed: dict[str, int]  # folder -> bytes the load needs on its filesystem
    free: dict[str, int]  # folder -> bytes free on its filesystem

    @property
    def short(self) -> list[str]:
        """The folders whose filesystem lacks room."""
        return [folder for folder, need in self.needed.items() if self.free[folder] < need]


def _gb(n: float) -> str:
    return f"{n / 1e9:.2f} GB" if n >= 1e9 else f"{n / 1e6:.0f} MB"


def _server_is_local(engine: sqlalchemy.Engine) -> bool:
    host = engine.url.host or str(engine.url.query.get("host") or "")
    return db.is_embedded(engine) or host in ("", "localhost", "127.0.0.1", "::1") or host.startswith("/")


def space_check(engine: sqlalchemy.Engine, n_listings: int) -> SpaceCheck | None:
    """Compare the free space of the server's folders with what loading ``n_listings`` needs.

    Possible when the server's files are on this machine (the embedded server, or a
    local one whose login may read ``data_directory``); None otherwise. The tables
    need ``TABLE_BYTES_PER_SNAPSHOT`` per snapshot in their tablespace and the log
    ``WAL_BYTES_PER_SNAPSHOT`` (at most ``max_wal_size``) in the data directory, each
    with a 20% margin; the old rows stay on disk until the load commits.
    """
    n = _check_n_listings(n_listings)
    if not _server_is_local(engine):
        return None
    snapshots = n * SNAPSHOTS_PER_LISTING
    try:
        with engine.connect() as conn:
            data_dir = conn.execute(sqlalchemy.text("SELECT current_setting('data_directory')")).scalar_one()
            max_wal = conn.execute(
                sqlalchemy.text("SELECT pg_size_bytes(current_setting('max_wal_size'))")
            ).scalar_one()
            places = conn.execute(
                sqlalchemy.text(
                    "SELECT coalesce(nullif(pg_tablespace_location(CASE c.reltablespace WHEN 0 THEN d.dattablespace "
                    "ELSE c.reltablespace END), ''), current_setting('data_directory')) "
                    "FROM pg_class AS c, pg_database AS d "
                    "WHERE d.datname = current_database() AND c.oid = ANY(CAST(:t AS regclass[]))"
                ),
                {"t": [SOCIO_TABLE, IMAGE_TABLE]},
            ).scalars()
            table_dirs = sorted(set(places))
    except sqlalchemy.exc.DBAPIError:  # a login that may not read data_directory: not checkable
        return None
    wants = [(d, snapshots * TABLE_BYTES_PER_SNAPSHOT / len(table_dirs)) for d in table_dirs]
    wants.append((data_dir, min(snapshots * WAL_BYTES_PER_SNAPSHOT, 1.5 * max_wal)))
    needed: dict[str, int] = {}
    free: dict[str, int] = {}
    by_device: dict[int, str] = {}
    for folder, want in wants:
        try:
            device = os.stat(folder).st_dev
            space = shutil.disk_usage(folder).free
        except OSError:  # not on this machine after all
            return None
        key = by_device.setdefault(device, folder)
        needed[key] = needed.get(key, 0) + int(want * SPACE_MARGIN)
        free[key] = space
    return SpaceCheck(needed, free)


def proc_kib(path: str, field: str) -> int | None:
    """A ``field: N kB`` line of a Linux /proc file (``/proc/meminfo``, ``/proc/self/status``) in
    KiB; None where there is no such file or field."""
    try:
        with open(path) as lines:
            for line in lines:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def _memory_available() -> int | None:
    """MemAvailable of /proc/meminfo in bytes (None where there is no /proc)."""
    kib = proc_kib("/proc/meminfo", "MemAvailable")
    return None if kib is None else kib * 1024


def _refuse_short_resources(engine: sqlalchemy.Engine, n: int) -> None:
    check = space_check(engine, n)
    if check is not None and check.short:
        where = "; ".join(
            f"{folder}: needs about {_gb(check.needed[folder])}, {_gb(check.free[folder])} free"
            for folder in check.short
        )
        raise OutOfResources(
            f"not enough disk space for a demo of {n:,} listings (about {round(n * SNAPSHOTS_PER_LISTING):,} "
            f"snapshots): {where}. Nothing was loaded; the current data are unchanged."
        )
    available = _memory_available()
    if available is not None and available < CHUNK_MEMORY_BYTES:
        raise OutOfResources(
            f"not enough memory to generate the demo: about {CHUNK_MEMORY_BYTES / 2**20:.0f} MB needed "
            f"(one chunk of {CHUNK_LISTINGS:,} listings, at any size), {available / 2**20:.0f} MB available. "
            "Nothing was loaded; the current data are unchanged."
        )


def _load_failure(engine: sqlalchemy.Engine, n: int, sent: int, exc: Exception) -> Exception:
    """The error to report for a server-side failure of the load (SQLAlchemy may wrap psycopg's)."""
    orig = getattr(exc, "orig", None) or exc
    if isinstance(orig, psycopg.errors.DiskFull | psycopg.errors.OutOfMemory):
        what = "disk space" if isinstance(orig, psycopg.errors.DiskFull) else "memory"
        check = space_check(engine, n) if what == "disk space" else None
        need = (
            " It needs about "
            + ", ".join(
                f"{_gb(b)} in {folder} ({_gb(check.free[folder])} free now)" for folder, b in check.needed.items()
            )
            + "."
            if check
            else ""
        )
        return OutOfResources(
            f"the database server ran out of {what} while loading a demo of {n:,} listings, after sending "
            f"{sent:,} snapshots ({orig.diag.message_primary}). The load was rolled back: the previous data "
            f"and their certification are unchanged.{need}"
        )
    first_line = (str(orig).strip().splitlines() or [type(orig).__name__])[0]
    if (
        isinstance(orig, psycopg.OperationalError)
        and not orig.sqlstate
        or isinstance(orig, psycopg.errors.AdminShutdown)
    ):
        return DatabaseUnavailable(
            f"lost the database server while loading a demo of {n:,} listings, after sending {sent:,} snapshots "
            f"({first_line}). Nothing of this load was committed: the previous data and their certification are "
            "unchanged. The server's log says why (a full disk under pg_wal stops the server)."
        )
    return exc


def load_demo(
    engine: sqlalchemy.Engine, n_listings: int, *, seed: int = 7, check_resources: bool = True
) -> dict[str, int]:
    """Replace the contents of both base tables with ``generate_demo(n_listings, seed=seed)``.

    The rows are generated and sent with COPY one chunk of ``CHUNK_LISTINGS`` listings
    at a time, so memory does not grow with the size. TRUNCATE and every COPY run in
    one transaction on the engine's psycopg 3 connection: readers see either the old
    or the new demo data, and a load that fails half-way (disk full, memory, a lost
    connection) leaves the old rows, the change marker and so the old certification
    exactly as they were; no partial dataset can be certified. Before touching the
    database it refuses, with ``OutOfResources``, a load the free disk space of a local
    server (``space_check``) or the available memory cannot hold, and it reports a
    server that runs out of disk or memory during the load the same way. Returns the
    row counts ``{"socio_rows": ..., "image_rows": ...}``. Raises ``InvalidParameter``
    for a bad ``n_listings`` before touching the database.
    """
    n = _check_n_listings(n_listings)
    if check_resources:
        _refuse_short_resources(engine, n)
    chunks = iter_demo(n, seed=seed)
    socio_rows = image_rows = 0
    done = 0
    try:
        with engine.begin() as conn:
            raw = conn.connection.driver_connection
            if not isinstance(raw, psycopg.Connection):
                raise TypeError(
                    f"load_demo needs a psycopg 3 engine (postgresql+psycopg://), got driver {engine.driver!r}"
                )
            with raw.transaction(), raw.cursor() as cur:
                cur.execute(f"TRUNCATE {SOCIO_TABLE}, {IMAGE_TABLE}")
                for chunk in chunks:
                    socio_rows += _copy_frame(cur, SOCIO_TABLE, chunk.socio)
                    image_rows += _copy_frame(cur, IMAGE_TABLE, chunk.images)
                    done += 1
    except MemoryError:
        raise OutOfResources(
            f"this process ran out of memory generating chunk {done + 1} of a demo of {n:,} listings "
            f"(the process needs about {CHUNK_MEMORY_BYTES / 2**20:.0f} MB with one chunk of {CHUNK_LISTINGS:,} "
            "listings, at any size). The load was rolled back: the previous data and their certification are unchanged."
        ) from None
    except (psycopg.OperationalError, sqlalchemy.exc.OperationalError) as exc:
        raise _load_failure(engine, n, socio_rows, exc) from None
    # Fresh statistics at once (a sample, not a scan): query plans and the Home page's
    # estimated counts need not wait for autovacuum.
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(sqlalchemy.text(f"ANALYZE {SOCIO_TABLE}, {IMAGE_TABLE}"))
    return {"socio_rows": socio_rows, "image_rows": image_rows}
