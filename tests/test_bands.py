"""Every band boundary (docs/model.md) through the SQL banding, table-driven; every copy of the band schema agrees."""

import math
import re

import pytest
import sqlalchemy as sa
from conftest import CITUS_TARGET

from modelkit import VALUES, fold_of
from woe_core import bands, demo

T = (-0.15, -0.05, 0.05, 0.15)

DSOLD = [
    (None, "dSold_missing"),
    (math.nan, "dSold_missing"),
    (-math.inf, "dSold_under"),
    (-0.5, "dSold_under"),
    (-0.15, "dSold_low"),
    (-0.1, "dSold_low"),
    (-0.05, "dSold_fair"),
    (0.0, "dSold_fair"),
    (0.05, "dSold_high"),
    (0.149, "dSold_high"),
    (0.15, "dSold_over"),
    (3.0, "dSold_over"),
    (math.inf, "dSold_over"),
]
TRUST = [
    ("HIGH", "HIGH"),
    ("MEDIUM", "MEDIUM"),
    ("LOW", "LOW"),
    ("NEW", "NEW"),
    (None, "trust_missing"),
    ("high", "trust_missing"),
    ("PLATINUM", "trust_missing"),
]
SHIP = [(True, "shipping_ok"), (False, "shipping_no"), (None, "ship_missing")]
SALE = [(True, "sale_negotiable"), (False, "sale_fixed"), (None, "sale_missing")]
COND = [
    ("new", "cond_new"),
    ("like_new", "cond_like_new"),
    ("good", "cond_good"),
    ("fair", "cond_fair"),
    ("for_parts", "cond_parts"),
    (None, "cond_missing"),
    ("mint", "cond_missing"),
]
PROB = [
    (None, "missing"),
    (math.nan, "missing"),
    (-math.inf, "lo"),
    (0.0, "lo"),
    (0.1999, "lo"),
    (0.2, "mid"),
    (0.4999, "mid"),
    (0.5, "hi"),
    (1.0, "hi"),
    (math.inf, "hi"),
]
BAT = [
    (None, "bat_missing"),
    (0, "bat_lt80"),
    (79, "bat_lt80"),
    (80, "bat_80_89"),
    (89, "bat_80_89"),
    (90, "bat_90p"),
    (100, "bat_90p"),
]
PRESENT = [
    (None, "present_missing"),
    (math.nan, "present_missing"),
    (-math.inf, "present_lo"),
    (0.0, "present_lo"),
    (0.3999, "present_lo"),
    (0.4, "present_mid"),
    (0.6999, "present_mid"),
    (0.7, "present_hi"),
    (1.0, "present_hi"),
    (math.inf, "present_hi"),
]
ACC = [  # (has_image_row, has_box, has_charger)
    ((False, None, None), "acc_missing"),
    ((False, True, True), "acc_missing"),
    ((True, None, None), "acc_missing"),
    ((True, True, True), "acc_full"),
    ((True, True, False), "acc_partial"),
    ((True, None, True), "acc_partial"),
    ((True, False, False), "acc_none"),
    ((True, False, None), "acc_none"),
]


def _one(engine, sql, **params):
    with engine.connect() as conn:
        return conn.execute(sa.text(sql), params).scalar_one()


def _cases(call: str, table):
    return [pytest.param(call, x, band, id=f"{call.split('(')[0]}-{x!r}") for x, band in table]


SCALAR_CASES = (
    _cases("ml.woe_band_dsold(CAST(:x AS float8), -0.15, -0.05, 0.05, 0.15)", DSOLD)
    + _cases("ml.woe_band_trust(CAST(:x AS text))", TRUST)
    + _cases("ml.woe_band_ship(CAST(:x AS boolean))", SHIP)
    + _cases("ml.woe_band_sale(CAST(:x AS boolean))", SALE)
    + _cases("ml.woe_band_cond(CAST(:x AS text))", COND)
    + _cases("ml.woe_band_prob3('dmg_ai', CAST(:x AS float8))", [(x, f"dmg_ai_{s}") for x, s in PROB])
    + _cases("ml.woe_band_prob3('vdmg', CAST(:x AS float8))", [(x, f"vdmg_{s}") for x, s in PROB])
    + _cases("ml.woe_band_bat(CAST(:x AS smallint))", BAT)
    + _cases("ml.woe_band_present(CAST(:x AS float8), 0.4, 0.7)", PRESENT)
)


@pytest.mark.parametrize(("call", "x", "band"), SCALAR_CASES)
def test_band_boundaries(read_only_engine, call, x, band):
    assert _one(read_only_engine, f"SELECT {call}", x=x) == band


@pytest.mark.parametrize(("flags", "band"), ACC)
def test_accessories(read_only_engine, flags, band):
    row, box, charger = flags
    sql = "SELECT ml.woe_band_acc(CAST(:r AS boolean), CAST(:b AS boolean), CAST(:c AS boolean))"
    assert _one(read_only_engine, sql, r=row, b=box, c=charger) == band


@pytest.mark.parametrize(
    ("n_photos", "quality", "lighting", "background", "expected"),
    [
        (10, 1.0, 1.0, 1.0, 1.0),
        (3, 0.5, 0.2, 0.9, 0.4 * 0.5 + 0.3 * 0.2 + 0.2 * 0.9 + 0.1 * 3 / 10),
        (25, 0.0, 0.0, 0.0, 0.1),
        (None, 0.5, 0.5, 0.5, None),
        (4, None, 0.5, 0.5, None),
    ],
)
def test_presentation_score(read_only_engine, n_photos, quality, lighting, background, expected):
    got = _one(
        read_only_engine,
        "SELECT ml.woe_presentation_score(CAST(:n AS smallint), :q, :l, :b)",
        n=n_photos,
        q=quality,
        l=lighting,
        b=background,
    )
    assert got == pytest.approx(expected) if expected is not None else got is None


def test_bands_view_uses_the_same_functions_end_to_end(engine):
    """A row through the banding training and live scoring share: the inputs view with the two
    parameterised bands applied (as Citus can plan it), and on one node also ml.woe_anchor_bands_v1."""
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO ml.socio_market_snapshots VALUES (1, 'iphone_13', '2026-05-01T12:00Z', -0.05, 'LOW', "
                "true, false, 'for_parts', 0.2, 89, NULL, '2026-05-01T11:00Z'),"
                "(2, 'iphone_12', '2026-05-02T12:00Z', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, '2026-05-02T11:00Z')"
            )
        )
        conn.execute(
            sa.text(
                "INSERT INTO ml.iphone_image_features VALUES (1, '2026-05-01T12:00Z', 10, 1.0, 1.0, 1.0, 0.5, true, NULL)"
            )
        )
        rows = (
            conn.execute(
                sa.text(
                    "SELECT i.*, ml.woe_band_dsold(i.delta_vs_sold_median_30d, -0.15, -0.05, 0.05, 0.15) AS dsold_band, "
                    "ml.woe_band_present(i.presentation_score, 0.4, 0.7) AS presentation_band "
                    "FROM ml.v_woe_anchor_band_inputs_v1 AS i ORDER BY listing_id"
                )
            )
            .mappings()
            .all()
        )
        if not CITUS_TARGET:  # the set-returning function Citus cannot plan gives the same rows
            function_rows = (
                conn.execute(
                    sa.text(
                        "SELECT * FROM ml.woe_anchor_bands_v1(-0.15, -0.05, 0.05, 0.15, 0.4, 0.7) ORDER BY listing_id"
                    )
                )
                .mappings()
                .all()
            )
            assert [dict(f) for f in function_rows] == [
                {k: r[k] for k in f} for r, f in zip(rows, function_rows, strict=True)
            ]
    first, second = rows
    assert [
        first[k]
        for k in (
            "dsold_band",
            "trust_tier",
            "ship_band",
            "sale_band",
            "cond_band",
            "dmg_ai_band",
            "bat_band",
            "presentation_band",
            "vdmg_band",
            "accessories_band",
        )
    ] == [
        "dSold_fair",
        "LOW",
        "shipping_ok",
        "sale_fixed",
        "cond_parts",
        "dmg_ai_mid",
        "bat_80_89",
        "present_hi",
        "vdmg_hi",
        "acc_partial",
    ]
    assert first["presentation_score"] == pytest.approx(1.0)
    assert [
        second[k]
        for k in (
            "dsold_band",
            "trust_tier",
            "ship_band",
            "sale_band",
            "cond_band",
            "dmg_ai_band",
            "bat_band",
            "presentation_band",
            "vdmg_band",
            "accessories_band",
        )
    ] == [
        "dSold_missing",
        "trust_missing",
        "ship_missing",
        "sale_missing",
        "cond_missing",
        "dmg_ai_missing",
        "bat_missing",
        "present_missing",
        "vdmg_missing",
        "acc_missing",
    ]
    assert second["presentation_score"] is None
    # The view's slot columns are the slots of its band values.
    with engine.connect() as conn:
        for row in rows:
            for band, column, _ in bands.BANDS:
                if band in ("dsold", "present"):  # parameterised: slots from ml.woe_slot_of_<band>, below
                    continue
                slot = conn.execute(sa.text(f"SELECT ml.woe_slot_{band}(:v)"), {"v": row[column]}).scalar_one()
                assert slot is not None and row[f"{band}_slot"] == slot, (row["listing_id"], band)


# Each band's slot function of the inputs against its band function: the same inputs
# give the slot (ml.woe_slot_<band>) of the band value.
SLOT_CALLS = [
    (
        "dsold",
        "ml.woe_band_dsold({x}, -0.15, -0.05, 0.05, 0.15)",
        "ml.woe_slot_of_dsold({x}, -0.15, -0.05, 0.05, 0.15)",
        "float8",
        DSOLD,
    ),
    ("trust", "ml.woe_band_trust({x})", "ml.woe_slot_of_trust({x})", "text", TRUST),
    ("ship", "ml.woe_band_ship({x})", "ml.woe_slot_of_ship({x})", "boolean", SHIP),
    ("sale", "ml.woe_band_sale({x})", "ml.woe_slot_of_sale({x})", "boolean", SALE),
    ("cond", "ml.woe_band_cond({x})", "ml.woe_slot_of_cond({x})", "text", COND),
    ("dmg", "ml.woe_band_prob3('dmg_ai', {x})", "ml.woe_slot_of_dmg({x})", "float8", PROB),
    ("bat", "ml.woe_band_bat({x})", "ml.woe_slot_of_bat({x})", "smallint", BAT),
    ("present", "ml.woe_band_present({x}, 0.4, 0.7)", "ml.woe_slot_of_present({x}, 0.4, 0.7)", "float8", PRESENT),
    ("vdmg", "ml.woe_band_prob3('vdmg', {x})", "ml.woe_slot_of_vdmg({x})", "float8", PROB),
]


@pytest.mark.parametrize(
    ("band", "band_call", "slot_call", "sql_type", "table"), SLOT_CALLS, ids=[c[0] for c in SLOT_CALLS]
)
def test_slot_of_the_inputs_is_the_slot_of_the_band_value(
    read_only_engine, band, band_call, slot_call, sql_type, table
):
    x = f"CAST(:x AS {sql_type})"
    with read_only_engine.connect() as conn:
        for value, band_value in table:
            text, slot = conn.execute(
                sa.text(f"SELECT {band_call.format(x=x)}, {slot_call.format(x=x)}"), {"x": value}
            ).one()
            expected = conn.execute(sa.text(f"SELECT ml.woe_slot_{band}(:v)"), {"v": text}).scalar_one()
            prefix = {"dmg": "dmg_ai_", "vdmg": "vdmg_"}.get(band, "")  # prob3's tables name the suffix only
            assert text == prefix + band_value, (band, value, text)
            assert (slot, expected is not None) == (expected, True), (band, value, text)


@pytest.mark.parametrize(("flags", "band"), ACC)
def test_slot_of_the_accessories(read_only_engine, flags, band):
    row, box, charger = flags
    args = "CAST(:r AS boolean), CAST(:b AS boolean), CAST(:c AS boolean)"
    with read_only_engine.connect() as conn:
        slot = conn.execute(
            sa.text(f"SELECT ml.woe_slot_of_acc({args})"), {"r": row, "b": box, "c": charger}
        ).scalar_one()
        expected = conn.execute(sa.text("SELECT ml.woe_slot_acc(:v)"), {"v": band}).scalar_one()
    assert expected is not None and slot == expected


def test_fold_function_matches_the_reference_and_keeps_listings_together(read_only_engine):
    ids = [1, 2, 3, 12345, 2147483646, 2147483647, 2147483648, 9_000_000_000_001]
    with read_only_engine.connect() as conn:
        got = (
            conn.execute(sa.text("SELECT ml.woe_fold(x, 5) FROM unnest(CAST(:ids AS bigint[])) AS x"), {"ids": ids})
            .scalars()
            .all()
        )
    assert got == [fold_of(i, 5) for i in ids]
    assert all(0 <= f < 5 for f in got)


# Every copy of the band schema agrees with the database's table ml.woe_anchor_band_values_v1.


def _schema(engine) -> list[tuple[str, str, str, int]]:
    with engine.connect() as conn:
        return [
            tuple(r)
            for r in conn.execute(
                sa.text(
                    "SELECT band_name, band_column, band_value, slot FROM ml.woe_anchor_band_values_v1 "
                    "WHERE band_schema_version = :v ORDER BY slot"
                ),
                {"v": bands.BAND_SCHEMA_VERSION},
            )
        ]


def test_python_band_schema_matches_the_database(read_only_engine):
    schema = _schema(read_only_engine)
    assert [(b, c) for b, c, _ in bands.BANDS] == list(dict.fromkeys((b, c) for b, c, _, _ in schema))
    assert {b: list(v) for b, v in bands.BAND_VALUES.items()} == {
        b: [v for name, _, v, _ in schema if name == b] for b in bands.BAND_NAMES
    }
    assert [s for *_, s in schema] == list(range(1, len(schema) + 1))


def test_every_slot_function_returns_the_tables_slot(read_only_engine):
    """The slot functions carry offsets of their own; a drifted one would score a row with another band's WOE."""
    with read_only_engine.connect() as conn:
        for band, _, value, slot in _schema(read_only_engine):
            got = conn.execute(
                sa.text(f"SELECT ml.woe_slot_{band}(:v), ml.woe_slot_{band}('no such value')"), {"v": value}
            ).one()
            assert tuple(got) == (slot, None), (band, value)


def test_the_map_tables_band_name_check_lists_the_schemas_bands(read_only_engine):
    with read_only_engine.connect() as conn:
        check = conn.execute(
            sa.text(
                "SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = 'ml.woe_anchor_map_v1'::regclass "
                "AND contype = 'c' AND pg_get_constraintdef(oid) LIKE '%band_name%'"
            )
        ).scalar_one()
    listed = re.findall(r"'([a-z]+)'::text", check)
    assert sorted(listed) == sorted(bands.BAND_NAMES)


def test_the_demo_ground_truth_and_the_test_reference_use_the_schemas_values(read_only_engine):
    schema = _schema(read_only_engine)
    values = {b: sorted(v for name, _, v, _ in schema if name == b) for b in bands.BAND_NAMES}
    assert {b: sorted(effects) for b, effects in demo.GROUND_TRUTH.items() if b in values} == values
    assert {b: sorted(v) for b, v in VALUES.items()} == values
    with read_only_engine.connect() as conn:
        known = set(conn.execute(sa.text("SELECT generation FROM ml.woe_known_generations")).scalars())
    assert set(demo.GENERATIONS) <= known


def test_the_shared_database_of_these_tests_refuses_writes(read_only_engine):
    """The module's tests share one database; a write would leak into the next test, so it fails."""
    with pytest.raises(sa.exc.DBAPIError, match="read-only transaction"), read_only_engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO ml.woe_known_generations (generation) VALUES ('iphone_99')"))
