from datetime import timedelta

import pytest
import sqlalchemy as sa
from conftest import leak_asof
from sqlalchemy.exc import DBAPIError

from woe_core import certify, train
from woe_core.contract import check_contract
from woe_core.errors import ContractError, InvalidParameter

DATASET = certify.ENTRYPOINT


def _sha(engine, tz="UTC"):
    with engine.connect() as conn:
        conn.execute(sa.text("SELECT set_config('TimeZone', :tz, false)"), {"tz": tz})
        conn.execute(sa.text("SET extra_float_digits = 0"))
        return conn.execute(sa.text("SELECT audit.dataset_sha256(:d)"), {"d": DATASET}).scalar_one()


def _recorded(engine):
    with engine.connect() as conn:
        return (
            conn.execute(
                sa.text(
                    "SELECT passed, row_count, dataset_sha256, checks, certified_by FROM audit.dataset_certifications "
                    "ORDER BY certification_id"
                )
            )
            .mappings()
            .all()
        )


def test_passing_certification_is_recorded_with_counts_hash_and_checks(demo_engine):
    result = certify.certify(demo_engine, "alice")
    with demo_engine.connect() as conn:
        rows = conn.execute(sa.text(f"SELECT count(*) FROM {DATASET}")).scalar_one()
    assert result.passed and result.row_count == rows > 0
    assert result.dataset_sha256 == _sha(demo_engine)
    (recorded,) = _recorded(demo_engine)
    assert recorded["passed"] and recorded["row_count"] == rows and recorded["certified_by"] == "alice"
    assert {c["name"] for c in recorded["checks"]} >= {
        "t0_safe",
        "unique_snapshot_key",
        "non_null_keys",
        "non_empty",
        "contract",
    }
    assert all(c["passed"] for c in recorded["checks"])
    assert certify.status(demo_engine).fresh


_RANGE_SCAN = "SELECT min(t0), max(t0), greatest(max(t0), max(sold_at)) FROM ml.socio_market_snapshots"


def _sell_first_listing(conn, at) -> None:
    conn.execute(
        sa.text(
            "UPDATE ml.socio_market_snapshots SET sold_at = :at "
            "WHERE listing_id = (SELECT min(listing_id) FROM ml.socio_market_snapshots)"
        ),
        {"at": at},
    )


def test_certification_records_the_data_range_and_the_data_window_reads_it(demo_engine, monkeypatch):
    with demo_engine.begin() as conn:  # the data ends with a sale two days after the newest t0
        _sell_first_listing(
            conn,
            conn.execute(sa.text("SELECT max(t0) FROM ml.socio_market_snapshots")).scalar_one() + timedelta(days=2),
        )
        scanned = tuple(conn.execute(sa.text(_RANGE_SCAN)).one())
    assert scanned[2] == scanned[1] + timedelta(days=2)
    result = certify.certify(demo_engine, "alice")
    assert (result.min_edited_date, result.max_edited_date, result.data_end) == scanned
    assert train.data_window(demo_engine) == scanned

    def no_scan(_conn):
        raise AssertionError("the data window was read from the data, not from its certification")

    monkeypatch.setattr(train, "_data_range", no_scan)
    assert train.data_window(demo_engine) == scanned


def test_an_infinite_sale_leaves_the_recorded_data_end_at_the_finite_times(demo_engine):
    with demo_engine.begin() as conn:
        finite = tuple(conn.execute(sa.text(_RANGE_SCAN)).one())
        _sell_first_listing(conn, "infinity")
    result = certify.certify(demo_engine, "alice")
    assert not result.passed and "plausible_sold_at" in {c.name for c in result.failed_checks}
    assert (result.min_edited_date, result.max_edited_date) == finite[:2]
    assert result.data_end is not None and result.data_end >= result.max_edited_date


def test_the_data_window_is_read_from_the_data_once_it_changed_since_certification(demo_engine):
    certify.certify(demo_engine, "alice")
    certified = train.data_window(demo_engine)
    later = certified[2] + timedelta(days=1)
    with demo_engine.begin() as conn:  # a sale recorded after the certified data's end
        _sell_first_listing(conn, later)
    assert not certify.status(demo_engine).fresh
    assert train.data_window(demo_engine) == (certified[0], certified[1], later)
    assert certify.certify(demo_engine, "alice").data_end == later


def test_hash_is_stable_and_independent_of_session_settings(demo_engine):
    first = _sha(demo_engine)
    assert _sha(demo_engine) == first
    assert _sha(demo_engine, tz="America/New_York") == first
    assert len(first) == 64


def test_hash_changes_when_one_value_of_one_row_changes(demo_engine):
    before = _sha(demo_engine)
    with demo_engine.begin() as conn:
        lid, t0, bat = conn.execute(
            sa.text(
                "SELECT listing_id, t0, battery_health_pct FROM ml.socio_market_snapshots "
                "WHERE battery_health_pct IS NOT NULL ORDER BY listing_id, t0 LIMIT 1"
            )
        ).one()
        conn.execute(
            sa.text("UPDATE ml.socio_market_snapshots SET battery_health_pct = :b WHERE listing_id = :l AND t0 = :t"),
            {"b": 100 - bat if bat != 50 else 51, "l": lid, "t": t0},
        )
    changed = _sha(demo_engine)
    assert changed != before
    with demo_engine.begin() as conn:
        conn.execute(
            sa.text("UPDATE ml.socio_market_snapshots SET battery_health_pct = :b WHERE listing_id = :l AND t0 = :t"),
            {"b": bat, "l": lid, "t": t0},
        )
    assert _sha(demo_engine) == before


def _first_row(conn):
    return conn.execute(
        sa.text("SELECT listing_id, t0 FROM ml.socio_market_snapshots ORDER BY listing_id, t0 LIMIT 1")
    ).one()


def _leak(conn):
    lid, t0 = _first_row(conn)
    leak_asof(conn, "listing_id = :l AND t0 = :t", timedelta(hours=1), {"l": lid, "t": t0})


def _duplicate(conn):
    lid, t0 = _first_row(conn)
    conn.execute(
        sa.text(
            "INSERT INTO ml.socio_market_snapshots SELECT * FROM ml.socio_market_snapshots "
            "WHERE listing_id = :l AND t0 = :t"
        ),
        {"l": lid, "t": t0},
    )


def _bad_battery(conn):
    conn.execute(
        sa.text(
            "UPDATE ml.socio_market_snapshots SET battery_health_pct = 140 "
            "WHERE listing_id IN (SELECT listing_id FROM ml.socio_market_snapshots "
            "ORDER BY listing_id LIMIT 2)"
        )
    )


def _null_key(conn):
    lid, t0 = _first_row(conn)
    conn.execute(
        sa.text("UPDATE ml.socio_market_snapshots SET generation = NULL WHERE listing_id = :l AND t0 = :t"),
        {"l": lid, "t": t0},
    )


def _empty(conn):
    conn.execute(sa.text("DELETE FROM ml.iphone_image_features"))
    conn.execute(sa.text("DELETE FROM ml.socio_market_snapshots"))


@pytest.mark.parametrize(
    ("damage", "check", "min_violations"),
    [
        (_leak, "t0_safe", 1),
        (_duplicate, "unique_snapshot_key", 1),
        (_bad_battery, "range_battery_health_pct", 2),
        (_null_key, "non_null_keys", 1),
        (_empty, "non_empty", 1),
    ],
)
def test_bad_data_is_recorded_as_a_failed_certification_naming_the_check(demo_engine, damage, check, min_violations):
    with demo_engine.begin() as conn:
        damage(conn)
    result = certify.certify(demo_engine, "bob")
    assert not result.passed
    failed = {c.name: c.violations for c in result.failed_checks}
    assert check in failed and failed[check] >= min_violations
    assert check in result.summary() and "FAILED" in result.summary()
    (recorded,) = _recorded(demo_engine)
    assert recorded["passed"] is False
    assert [c["name"] for c in recorded["checks"] if not c["passed"]] == list(failed)
    assert not certify.status(demo_engine).fresh


def test_t0_leak_counts_exactly_the_leaking_rows(demo_engine):
    with demo_engine.begin() as conn:
        leak_asof(
            conn,
            "listing_id IN (SELECT DISTINCT listing_id FROM ml.socio_market_snapshots ORDER BY listing_id LIMIT 3)",
            timedelta(seconds=1),
        )
        expected = conn.execute(
            sa.text("SELECT count(*) FROM ml.socio_market_snapshots WHERE feature_asof_ts > t0")
        ).scalar_one()
    result = certify.certify(demo_engine, "bob")
    assert {c.name: c.violations for c in result.failed_checks} == {"t0_safe": expected}


def _break_contract(conn):
    conn.execute(sa.text("DROP VIEW ml.socio_market_feature_store_train_v CASCADE"))
    conn.execute(
        sa.text(
            "CREATE VIEW ml.socio_market_feature_store_train_v AS SELECT listing_id, generation, t0, "
            "delta_vs_sold_median_30d, seller_trust_tier, ships::text AS ships, negotiable, item_condition, "
            "dmg_ai_prob, battery_health_pct, feature_asof_ts FROM ml.socio_market_snapshots"
        )
    )


def test_contract_check_names_every_missing_column_and_wrong_type(demo_engine):
    check_contract(demo_engine)  # the shipped stores satisfy it
    with demo_engine.begin() as conn:
        _break_contract(conn)
    with pytest.raises(ContractError) as info:
        check_contract(demo_engine)
    assert sorted(info.value.problems) == sorted(
        [
            "ml.socio_market_feature_store_train_v is missing column 'sold_at' (expected timestamp with time zone)",
            "ml.socio_market_feature_store_train_v.ships has type 'text', expected 'boolean'",
        ]
    )
    result = certify.certify(demo_engine, "carol")
    assert not result.passed and [c.name for c in result.failed_checks] == ["contract"]
    assert "sold_at" in result.summary()


def test_missing_store_is_named(demo_engine):
    with demo_engine.begin() as conn:
        conn.execute(sa.text("DROP VIEW ml.iphone_image_features_unified_v1_train_v CASCADE"))
    with pytest.raises(ContractError, match="ml.iphone_image_features_unified_v1_train_v does not exist"):
        check_contract(demo_engine)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"actor": ""}, "actor must be a non-empty name, got ''"),
        ({"actor": None}, "actor must be a non-empty name, got None"),
        ({"actor": "x", "dataset": "ml.nope"}, "unknown dataset 'ml.nope'"),
    ],
)
def test_bad_certify_arguments_change_nothing(demo_engine, kwargs, message):
    with pytest.raises(InvalidParameter, match=message):
        certify.certify(demo_engine, **kwargs)
    assert _recorded(demo_engine) == []


def test_certifications_are_append_only(certified_engine):
    for statement in (
        "UPDATE audit.dataset_certifications SET passed = NOT passed",
        "DELETE FROM audit.dataset_certifications",
    ):
        with pytest.raises(DBAPIError, match="append-only"), certified_engine.begin() as conn:
            conn.execute(sa.text(statement))
    assert len(_recorded(certified_engine)) == 1


def test_certification_waits_for_a_write_in_flight_and_certifies_what_it_committed(demo_engine):
    """A write that began before a certification and commits during it must not slip past the guard."""
    import threading

    writer = demo_engine.connect()
    writer.begin()
    writer.execute(
        sa.text(
            "INSERT INTO ml.socio_market_snapshots SELECT listing_id, generation, t0 + interval '1 minute', "
            "delta_vs_sold_median_30d, seller_trust_tier, ships, negotiable, item_condition, dmg_ai_prob, "
            "battery_health_pct, sold_at, t0 + interval '2 minutes' FROM ml.socio_market_snapshots "
            "ORDER BY listing_id, t0 LIMIT 1"
        )
    )  # feature_asof_ts after t0: a T0 leak
    results = []
    worker = threading.Thread(target=lambda: results.append(certify.certify(demo_engine, "racer")))
    worker.start()
    worker.join(timeout=1.5)
    assert worker.is_alive(), "certification must wait for the uncommitted write"
    writer.commit()
    writer.close()
    worker.join(timeout=60)
    (result,) = results
    assert not result.passed and [c.name for c in result.failed_checks] == ["t0_safe"]
    assert not certify.status(demo_engine).fresh
