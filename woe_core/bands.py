"""The band schema (docs/model.md) as Python sees it.

Banding itself is SQL only: each band's rule is ``ml.woe_pos_<band>`` (``sql/V0014``), its
value ``ml.woe_band_<band>`` and its slot ``ml.woe_slot_of_<band>``, applied per snapshot by
``ml.v_woe_anchor_band_inputs_v1``; this module holds the names the rest of the package and
the app refer to. The fold of a listing is ``ml.woe_fold`` in SQL alone.
"""

from __future__ import annotations

BAND_SCHEMA_VERSION = 1
DEFAULT_DSOLD_THRESHOLDS = (-0.15, -0.05, 0.05, 0.15)

# (band_name, column of the banding views, column of its WOE in the score views)
BANDS: tuple[tuple[str, str, str], ...] = (
    ("dsold", "dsold_band", "woe_dsold"),
    ("trust", "trust_tier", "woe_trust"),
    ("ship", "ship_band", "woe_ship"),
    ("sale", "sale_band", "woe_sale"),
    ("cond", "cond_band", "woe_cond"),
    ("dmg", "dmg_ai_band", "woe_dmg"),
    ("bat", "bat_band", "woe_bat"),
    ("present", "presentation_band", "woe_present"),
    ("vdmg", "vdmg_band", "woe_vdmg"),
    ("acc", "accessories_band", "woe_acc"),
)
BAND_NAMES: tuple[str, ...] = tuple(b[0] for b in BANDS)

BAND_VALUES: dict[str, tuple[str, ...]] = {
    "dsold": ("dSold_under", "dSold_low", "dSold_fair", "dSold_high", "dSold_over", "dSold_missing"),
    "trust": ("HIGH", "MEDIUM", "LOW", "NEW", "trust_missing"),
    "ship": ("shipping_ok", "shipping_no", "ship_missing"),
    "sale": ("sale_negotiable", "sale_fixed", "sale_missing"),
    "cond": ("cond_new", "cond_like_new", "cond_good", "cond_fair", "cond_parts", "cond_missing"),
    "dmg": ("dmg_ai_hi", "dmg_ai_mid", "dmg_ai_lo", "dmg_ai_missing"),
    "bat": ("bat_90p", "bat_80_89", "bat_lt80", "bat_missing"),
    "present": ("present_lo", "present_mid", "present_hi", "present_missing"),
    "vdmg": ("vdmg_hi", "vdmg_mid", "vdmg_lo", "vdmg_missing"),
    "acc": ("acc_full", "acc_partial", "acc_none", "acc_missing"),
}
