"""Promotion (docs/governance.md): one atomic, serialised, audited way to change the active model."""

from __future__ import annotations

import threading
import time

import pytest
import sqlalchemy as sa
from conftest import DATA_CHANGED, change_first_listing
from sqlalchemy.exc import DBAPIError

from modelkit import VALUES, backdated_certification, break_glass, derived_model, handwritten_map, insert_model
from woe_core import certify, promote, registry
from woe_core.errors import CertificationRequired, InvalidParameter, PromotionRefused

ENTRYPOINT = certify.ENTRYPOINT
CHECKS = ["model_exists", "schema_served", "artifacts_complete", "not_active", "certification_fresh", "provenance"]
THREAD_TIMEOUT_S = 60


def key(i: int) -> str:
    return f"tom_aft_v1_20260601_{i:06d}"


def add_candidates(engine, *keys: str, woe: dict | None = None) -> None:
    """Models the certified data reproduces (distinct half-lives), or hand-written ones with ``woe``."""
    with engine.begin() as conn:
        for k in keys:
            if woe is None:
                derived_model(conn, k, half_life=30.0 + int(k[-6:]))
            else:
                insert_model(conn, k, woe)


def state(engine) -> tuple[list[tuple[str, bool]], list[tuple]]:
    """Registry (key, is_active) and the history, both in a stable order."""
    with engine.connect() as conn:
        models = [
            tuple(r)
            for r in conn.execute(
                sa.text("SELECT model_key, is_active FROM ml.woe_anchor_model_registry_v1 ORDER BY model_key")
            )
        ]
        rows = [
            tuple(r)
            for r in conn.execute(
                sa.text(
                    "SELECT promotion_id, from_model_key, to_model_key, actor, reason "
                    "FROM ml.woe_anchor_promotions_v1 ORDER BY promotion_id"
                )
            )
        ]
    return models, rows


def chain(engine) -> list[tuple[str | None, str]]:
    return [(r[1], r[2]) for r in state(engine)[1]]


def run_threads(targets) -> None:
    threads = [threading.Thread(target=t, daemon=True) for t in targets]
    for t in threads:
        t.start()
    for t in threads:
        t.join(THREAD_TIMEOUT_S)
    assert not any(t.is_alive() for t in threads), f"a promotion did not finish within {THREAD_TIMEOUT_S} s"


def wide_engine(engine, n: int) -> sa.Engine:
    """An engine with ``n`` connections already open, so ``n`` threads start at once."""
    wide = sa.create_engine(engine.url, pool_size=n, max_overflow=0)
    conns = [wide.connect() for _ in range(n)]
    for c in conns:
        c.close()
    return wide


def test_promote_switches_the_active_model_and_records_who_when_and_why(certified_engine):
    engine = certified_engine
    add_candidates(engine, key(1), key(2))
    first = promote.promote(engine, key(1), "  alice ", " first model ")
    second = promote.promote(engine, key(2), "bob", "better calibration")
    assert second > first
    assert registry.active_model_key(engine) == key(2)
    hist = promote.history(engine)
    assert list(hist.columns) == promote.HISTORY_COLUMNS
    assert hist["from_model_key"].tolist() == [key(1), None]
    assert hist[["from_model_key", "to_model_key", "actor", "reason"]].astype(object).values.tolist() == [
        [key(1), key(2), "bob", "better calibration"],
        [None, key(1), "alice", "first model"],
    ]
    assert hist["promotion_id"].tolist() == [second, first]
    assert hist["promoted_at"].is_monotonic_decreasing
    with engine.connect() as conn:
        assert (hist["db_user"] == conn.execute(sa.text("SELECT session_user")).scalar_one()).all()
    assert len(promote.history(engine, limit=1)) == 1


def test_preflight_of_a_complete_candidate_passes_every_check(certified_engine):
    add_candidates(certified_engine, key(1))
    checks = promote.preflight(certified_engine, key(1))
    assert [c.name for c in checks] == CHECKS
    assert all(c.passed for c in checks[:-1]), checks
    assert checks[-1].passed is None and "not yet verified" in checks[-1].detail
    assert "every band of schema 1" in checks[2].detail and "no model is active" in checks[3].detail
    assert registry.verify_provenance(certified_engine, key(1)) == []
    checks = promote.preflight(certified_engine, key(1))
    assert all(c.passed for c in checks) and "reproduces the model" in checks[-1].detail, checks


def _missing_bands(engine):
    add_candidates(
        engine,
        key(1),
        woe=handwritten_map(skip={("present", v) for v in VALUES["present"]} | {("vdmg", v) for v in VALUES["vdmg"]}),
    )


def _no_final_cuts(engine):
    add_candidates(engine, key(1))
    with engine.begin() as conn:
        break_glass(conn, "test: remove the final cuts", key(1))
        conn.execute(sa.text("DELETE FROM ml.woe_anchor_cuts_v1 WHERE model_key = :k"), {"k": key(1)})


def _unserved_schema(engine):
    add_candidates(engine, key(1))
    with engine.begin() as conn:
        break_glass(conn, "test: an unserved schema", key(1))
        conn.execute(
            sa.text("UPDATE ml.woe_anchor_model_registry_v1 SET band_schema_version = 2 WHERE model_key = :k"),
            {"k": key(1)},
        )


def _already_active(engine):
    add_candidates(engine, key(0), key(1))
    promote.promote(engine, key(0), "t", "setup")
    promote.promote(engine, key(1), "t", "setup")


def _record_certification(engine, age: str, passed: bool = True):
    checks = "[]" if passed else '[{"name": "t0_safe", "passed": false}]'
    with engine.begin() as conn:
        backdated_certification(conn, ENTRYPOINT, age, passed, checks)


def _data_changed(engine):
    add_candidates(engine, key(1))
    with engine.begin() as conn:
        change_first_listing(conn)


REFUSALS = [
    # (case, setup, runs on the certified demo (else uncertified), failing preflight check, error, message)
    (
        "missing",
        lambda e: None,
        True,
        "model_exists",
        PromotionRefused,
        "promotion of model 'tom_aft_v1_20260601_000001' refused: it does not exist",
    ),
    (
        "no_final_cuts",
        _no_final_cuts,
        True,
        "artifacts_complete",
        PromotionRefused,
        r"model 'tom_aft_v1_20260601_000001' refused: it has no final cuts \(no ml.woe_anchor_cuts_v1 row",
    ),
    (
        "map_lacks_bands",
        _missing_bands,
        True,
        "artifacts_complete",
        PromotionRefused,
        "model 'tom_aft_v1_20260601_000001' refused: its final map lacks the bands: present, vdmg$",
    ),
    (
        "unserved_schema",
        _unserved_schema,
        True,
        "schema_served",
        PromotionRefused,
        r"model 'tom_aft_v1_20260601_000001' refused: its band_schema_version 2 is not served by the live views "
        r"\(they serve: 1\)",
    ),
    (
        "already_active",
        _already_active,
        True,
        "not_active",
        PromotionRefused,
        "model 'tom_aft_v1_20260601_000001' refused: it is already the active model",
    ),
    (
        "never_certified",
        lambda e: add_candidates(e, key(1)),
        False,
        "certification_fresh",
        CertificationRequired,
        f"model 'tom_aft_v1_20260601_000001' refused: dataset {ENTRYPOINT} is not certified: "
        "no certification has been recorded.*python -m woe_core certify",
    ),
    (
        "stale_certification",
        lambda e: (add_candidates(e, key(1)), _record_certification(e, "25 hours")),
        False,
        "certification_fresh",
        CertificationRequired,
        "is not certified: its latest certification .* is older than 24:00:00",
    ),
    (
        "failed_certification",
        lambda e: (add_candidates(e, key(1)), _record_certification(e, "1 hour", False)),
        False,
        "certification_fresh",
        CertificationRequired,
        "is not certified: its latest certification .* failed checks: t0_safe",
    ),
    (
        "data_changed",
        _data_changed,
        True,
        "certification_fresh",
        CertificationRequired,
        f"is not certified: ({DATA_CHANGED})",
    ),
]


@pytest.mark.parametrize(
    ("case", "setup", "certified", "check", "error", "message"), REFUSALS, ids=[r[0] for r in REFUSALS]
)
def test_each_refusal_names_the_model_and_reason_and_changes_nothing(
    request, case, setup, certified, check, error, message
):
    engine = request.getfixturevalue("certified_engine" if certified else "demo_engine")
    setup(engine)
    before = state(engine)
    with pytest.raises(error, match=message):
        promote.promote(engine, key(1), "reviewer", "looks good")
    assert state(engine) == before
    failed = [c for c in promote.preflight(engine, key(1)) if c.passed is False]
    assert failed and check in [c.name for c in failed]


def test_certification_refusal_keeps_the_guard_sqlstate(demo_engine):
    add_candidates(demo_engine, key(1))
    with pytest.raises(DBAPIError) as info, demo_engine.begin() as conn:
        conn.execute(sa.text("SELECT ml.promote_woe_anchor_model(:k, 'a', 'b')"), {"k": key(1)})
    assert info.value.orig.sqlstate == "WC001"


@pytest.mark.parametrize(
    ("actor", "reason", "message"),
    [
        ("", "ok", "actor must be a non-empty name, got ''"),
        ("  ", "ok", "actor must be a non-empty name, got '  '"),
        (None, "ok", "actor must be a non-empty name, got None"),
        ("alice", "", "reason must be a non-empty explanation of the promotion, got ''"),
        ("alice", " \t\n", r"reason must be a non-empty explanation of the promotion, got ' \\t\\n'"),
        ("alice", 42, "reason must be a non-empty explanation of the promotion, got 42"),
        ("alice", "x" * 2001, "reason must be at most 2000 characters, got 2001"),
    ],
)
def test_blank_actor_or_reason_is_rejected_before_any_write(certified_engine, actor, reason, message):
    add_candidates(certified_engine, key(1))
    before = state(certified_engine)
    with pytest.raises(InvalidParameter, match=message):
        promote.promote(certified_engine, key(1), actor, reason)
    with pytest.raises(InvalidParameter, match=message):
        promote.rollback(certified_engine, actor, reason)
    assert state(certified_engine) == before


@pytest.mark.parametrize(
    ("actor", "reason", "message"),
    [
        (" ", "ok", "refused: actor must be a non-empty name, got ' '"),
        (None, "ok", "refused: actor must be a non-empty name, got NULL"),
        ("alice", "\t", "refused: a reason is required, got '\t'"),
        ("alice", None, "refused: a reason is required, got NULL"),
    ],
)
def test_the_database_function_refuses_blank_actor_or_reason_too(certified_engine, actor, reason, message):
    add_candidates(certified_engine, key(1))
    before = state(certified_engine)
    with pytest.raises(DBAPIError) as info, certified_engine.begin() as conn:
        conn.execute(sa.text("SELECT ml.promote_woe_anchor_model(:k, :a, :r)"), {"k": key(1), "a": actor, "r": reason})
    assert info.value.orig.sqlstate == "WP001"
    assert info.value.orig.diag.message_primary == f"promotion of model '{key(1)}' {message}"
    assert state(certified_engine) == before


@pytest.mark.parametrize("bad", [None, "", "   ", 7])
def test_bad_model_key_is_rejected(certified_engine, bad):
    with pytest.raises(InvalidParameter, match=f"model_key must be a non-empty model key .*got {bad!r}"):
        promote.promote(certified_engine, bad, "a", "b")


def test_direct_changes_of_is_active_are_refused_even_for_the_owner(certified_engine):
    engine = certified_engine
    add_candidates(engine, key(1), key(2))
    promote.promote(engine, key(1), "t", "setup")
    before = state(engine)
    statements = [
        (
            "UPDATE ml.woe_anchor_model_registry_v1 SET is_active = (model_key = :k2)",
            "is_active of model .* cannot be changed directly: only ml.promote_woe_anchor_model",
        ),
        (
            "UPDATE ml.woe_anchor_model_registry_v1 SET is_active = false WHERE is_active",
            f"is_active of model '{key(1)}' cannot be changed directly",
        ),
        (
            "INSERT INTO ml.woe_anchor_model_registry_v1 (model_key, train_cutoff_ts, half_life_days, eps, n_folds, "
            "band_schema_version, code_sha256, is_active, base_rate, base_logit, dsold_t1, dsold_t2, dsold_t3, "
            "dsold_t4, created_by) SELECT 'tom_aft_v1_20260601_000009', train_cutoff_ts, half_life_days, eps, n_folds, "
            "band_schema_version, code_sha256, true, base_rate, base_logit, dsold_t1, dsold_t2, dsold_t3, dsold_t4, "
            "'t' FROM ml.woe_anchor_model_registry_v1 WHERE model_key = :k1",
            "model 'tom_aft_v1_20260601_000009' cannot be registered as active: new models start inactive",
        ),
        (
            "DELETE FROM ml.woe_anchor_model_registry_v1 WHERE model_key = :k1",
            f"model '{key(1)}' cannot be deleted directly: only ml.delete_woe_anchor_model deletes models",
        ),
    ]
    for sql, message in statements:
        with pytest.raises(DBAPIError, match=message) as info, engine.begin() as conn:
            conn.execute(sa.text(sql), {"k1": key(1), "k2": key(2)})
        assert info.value.orig.sqlstate == "42501"
    assert state(engine) == before


def test_artifacts_of_every_model_are_immutable(certified_engine):
    engine = certified_engine
    add_candidates(engine, key(1), key(2), key(3))
    promote.promote(engine, key(1), "t", "setup")
    promote.promote(engine, key(2), "t", "setup")  # key(1) is now only in the history; key(3) a candidate
    digests = {k: registry.artifact_digest(engine, k) for k in (key(1), key(2), key(3))}
    for k in (key(1), key(2), key(3)):
        for sql, message in [
            ("DELETE FROM ml.woe_anchor_map_v1 WHERE model_key = :k AND band_name = 'acc'", "is immutable: DELETE"),
            ("UPDATE ml.woe_anchor_map_v1 SET woe = 0 WHERE model_key = :k", "is immutable: UPDATE"),
            ("UPDATE ml.woe_anchor_cuts_v1 SET c1 = 0 WHERE model_key = :k", "is immutable: UPDATE"),
            ("DELETE FROM ml.woe_anchor_cuts_v1 WHERE model_key = :k", "is immutable: DELETE"),
            (
                "UPDATE ml.woe_anchor_model_registry_v1 SET base_logit = base_logit + 1 WHERE model_key = :k",
                "its registry row cannot change after registration",
            ),
            (
                "INSERT INTO ml.woe_anchor_cuts_v1 VALUES (:k, 7, 0.1, 0.2, 0)",
                "can only be added in the transaction that registers the model",
            ),
        ]:
            with pytest.raises(DBAPIError, match=f"model '{k}' .*{message}") as info, engine.begin() as conn:
                conn.execute(sa.text(sql), {"k": k})
            assert info.value.orig.sqlstate == "42501"
    assert {k: registry.artifact_digest(engine, k) for k in digests} == digests
    assert all(c.passed for c in promote.preflight(engine, key(1))[:3])


def test_twenty_concurrent_promotions_serialise_into_one_history_chain(certified_engine):
    engine = certified_engine
    keys = [key(i) for i in range(20)]
    add_candidates(engine, *keys)
    wide = wide_engine(engine, 20)
    barrier = threading.Barrier(20)
    results: dict[str, object] = {}

    def attempt(k):
        def run():
            barrier.wait()
            try:
                results[k] = promote.promote(wide, k, "racer", f"race {k}")
            except Exception as exc:  # recorded and asserted below
                results[k] = exc

        return run

    try:
        run_threads([attempt(k) for k in keys])
    finally:
        wide.dispose()
    failures = {k: r for k, r in results.items() if isinstance(r, Exception)}
    assert all(isinstance(e, PromotionRefused) and k in str(e) for k, e in failures.items()), failures
    assert not failures, "different complete candidates must all be promoted"
    models, rows = state(engine)
    assert [k for k, active in models if active] == [rows[-1][2]]
    assert len(rows) == 20 and sorted(r[2] for r in rows) == keys
    assert rows[0][1] is None
    assert all(row[1] == prev[2] for prev, row in zip(rows, rows[1:], strict=False)), rows
    assert sorted(results.values()) == [r[0] for r in rows]


def test_twenty_concurrent_promotions_of_one_candidate_succeed_once(certified_engine):
    engine = certified_engine
    add_candidates(engine, key(0), key(1))
    promote.promote(engine, key(0), "t", "setup")
    wide = wide_engine(engine, 20)
    barrier = threading.Barrier(20)
    results: list[object] = []

    def run():
        barrier.wait()
        try:
            results.append(promote.promote(wide, key(1), "racer", "same candidate"))
        except Exception as exc:  # recorded and asserted below
            results.append(exc)

    try:
        run_threads([run] * 20)
    finally:
        wide.dispose()
    ok = [r for r in results if isinstance(r, int)]
    refused = [r for r in results if not isinstance(r, int)]
    assert len(ok) == 1 and len(refused) == 19
    for exc in refused:
        assert isinstance(exc, PromotionRefused)
        assert str(exc) == f"promotion of model '{key(1)}' refused: it is already the active model"
    assert chain(engine) == [(None, key(0)), (key(0), key(1))]


def test_a_reader_never_sees_zero_or_two_active_models(certified_engine):
    engine = certified_engine
    keys = [key(i) for i in range(3)]
    add_candidates(engine, *keys)
    promote.promote(engine, keys[0], "t", "before sampling")
    stop = threading.Event()
    done = [0]
    errors: list[Exception] = []

    def promoter():
        try:
            while not stop.is_set():
                promote.promote(engine, keys[(done[0] + 1) % 3], "looper", f"promotion {done[0] + 1}")
                done[0] += 1
        except Exception as exc:  # recorded and asserted below
            errors.append(exc)

    thread = threading.Thread(target=promoter, daemon=True)
    thread.start()
    counts = []
    deadline = time.monotonic() + THREAD_TIMEOUT_S
    try:
        with engine.connect() as conn:
            sample = sa.text("SELECT count(*) FROM ml.woe_anchor_model_registry_v1 WHERE is_active")
            while (len(counts) < 600 or done[0] < 30) and time.monotonic() < deadline and not errors:
                counts.append(conn.execute(sample).scalar_one())
                conn.rollback()
    finally:
        stop.set()
        thread.join(THREAD_TIMEOUT_S)
    assert not thread.is_alive() and not errors, errors
    assert set(counts) == {1}, {c: counts.count(c) for c in set(counts)}
    assert done[0] >= 30 and len(chain(engine)) == done[0] + 1


def _promotion_lock_held(engine) -> bool:
    """True when another session holds the promotion lock (probed with a 10 ms bounded wait)."""
    with engine.connect() as conn:
        try:
            conn.execute(sa.text("SELECT ml.woe_anchor_lock_v1('promotion', interval '10 milliseconds')"))
            return False
        except DBAPIError as exc:
            assert exc.orig.sqlstate == "WL001", exc
            return True
        finally:
            conn.rollback()


def _lock_waiters(engine) -> int:
    with engine.connect() as conn:
        return conn.execute(
            sa.text(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock' "
                "AND query LIKE '%promote_woe_anchor_model%'"
            )
        ).scalar_one()


def _wait_until_a_promotion_waits(engine, message: str) -> None:
    """Poll (up to 10 s) until some backend waits for the promotion lock."""
    deadline = time.monotonic() + 10
    while not _lock_waiters(engine) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert _lock_waiters(engine), message


def _start_uncommitted_promotion(engine, model_key):
    """A connection that has run the promotion function but not committed; returns (engine, conn, pid)."""
    victim_engine = sa.create_engine(engine.url, poolclass=sa.pool.NullPool)
    victim = victim_engine.connect()
    pid = victim.execute(sa.text("SELECT pg_backend_pid()")).scalar_one()
    victim.execute(sa.text("SELECT ml.promote_woe_anchor_model(:k, 'victim', 'will be killed')"), {"k": model_key})
    return victim_engine, victim, pid


def _kill(engine, victim_engine, victim, pid) -> None:
    with engine.connect() as conn:
        assert conn.execute(
            sa.text("SELECT pg_terminate_backend(CAST(:p AS integer), CAST(10000 AS bigint))"), {"p": pid}
        ).scalar_one()
    victim.invalidate()
    victim.close()
    victim_engine.dispose()


def test_a_promotion_killed_before_commit_changes_nothing(certified_engine):
    engine = certified_engine
    add_candidates(engine, key(0), key(1))
    promote.promote(engine, key(0), "t", "setup")
    before = state(engine)
    victim_engine, victim, pid = _start_uncommitted_promotion(engine, key(1))
    assert _promotion_lock_held(engine), "the victim should hold the promotion lock"
    with engine.connect() as conn:
        assert conn.execute(
            sa.text("SELECT model_key FROM ml.woe_anchor_model_registry_v1 WHERE is_active")
        ).scalar_one() == key(0)
    _kill(engine, victim_engine, victim, pid)
    assert state(engine) == before
    assert registry.active_model_key(engine) == key(0)
    assert not _promotion_lock_held(engine)


def test_a_waiting_promotion_proceeds_when_the_lock_holder_is_killed(certified_engine):
    engine = certified_engine
    add_candidates(engine, key(0), key(1), key(2))
    promote.promote(engine, key(0), "t", "setup")
    victim_engine, victim, pid = _start_uncommitted_promotion(engine, key(1))
    outcome: list[object] = []

    def waiter():
        try:
            outcome.append(promote.promote(engine, key(2), "waiter", "queued behind the victim"))
        except Exception as exc:  # recorded and asserted below
            outcome.append(exc)

    thread = threading.Thread(target=waiter, daemon=True)
    thread.start()
    _wait_until_a_promotion_waits(engine, "the second promotion should wait for the lock")
    assert not outcome
    _kill(engine, victim_engine, victim, pid)
    thread.join(THREAD_TIMEOUT_S)
    assert not thread.is_alive() and len(outcome) == 1 and isinstance(outcome[0], int), outcome
    assert chain(engine) == [(None, key(0)), (key(0), key(2))]
    assert registry.active_model_key(engine) == key(2)


def test_a_promotion_waits_for_a_concurrent_deletion_of_its_candidate_and_refuses(certified_engine):
    engine = certified_engine
    add_candidates(engine, key(0), key(1))
    promote.promote(engine, key(0), "t", "setup")
    before = state(engine)
    deleter_engine = sa.create_engine(engine.url, poolclass=sa.pool.NullPool)
    outcome: list[object] = []

    def promoter():
        try:
            outcome.append(promote.promote(engine, key(1), "racer", "promote what is being deleted"))
        except Exception as exc:  # recorded and asserted below
            outcome.append(exc)

    with deleter_engine.connect() as deleter:
        deleter.execute(sa.text("SELECT ml.delete_woe_anchor_model(:k)"), {"k": key(1)})
        thread = threading.Thread(target=promoter, daemon=True)
        thread.start()
        _wait_until_a_promotion_waits(engine, "the promotion should wait for the deletion")
        deleter.commit()
    deleter_engine.dispose()
    thread.join(THREAD_TIMEOUT_S)
    assert not thread.is_alive() and len(outcome) == 1
    assert isinstance(outcome[0], PromotionRefused) and "it does not exist" in str(outcome[0]), outcome
    assert state(engine) == ([m for m in before[0] if m[0] != key(1)], before[1])


def test_rollback_restores_the_previous_model_and_records_it(certified_engine):
    engine = certified_engine
    add_candidates(engine, key(1), key(2))
    promote.promote(engine, key(1), "t", "first")
    promote.promote(engine, key(2), "t", "second")
    assert promote.rollback(engine, "carol", "key 2 misbehaves") == key(1)
    assert registry.active_model_key(engine) == key(1)
    latest = promote.history(engine).iloc[0]
    assert (latest["from_model_key"], latest["to_model_key"], latest["actor"], latest["reason"]) == (
        key(2),
        key(1),
        "carol",
        "key 2 misbehaves",
    )
    assert promote.rollback(engine, "carol", "undo the rollback") == key(2)
    assert chain(engine)[-1] == (key(1), key(2))


@pytest.mark.parametrize("promotions", [0, 1])
def test_rollback_without_a_previous_model_is_refused(certified_engine, promotions):
    add_candidates(certified_engine, key(1))
    if promotions:
        promote.promote(certified_engine, key(1), "t", "first")
    before = state(certified_engine)
    message = (
        "no promotion has been recorded"
        if not promotions
        else f"the latest promotion \\(#\\d+, to '{key(1)}'\\) had no previously active model"
    )
    with pytest.raises(PromotionRefused, match="rollback refused: " + message):
        promote.rollback(certified_engine, "t", "oops")
    assert state(certified_engine) == before


def test_rollback_is_refused_when_the_active_model_was_switched_outside_the_history(certified_engine):
    engine = certified_engine
    add_candidates(engine, key(1), key(2), key(3))
    promote.promote(engine, key(1), "t", "first")
    promote.promote(engine, key(2), "t", "second")
    with engine.begin() as conn:  # the owner's break-glass: no history row, a break-glass record instead
        break_glass(conn, "test: switch the active model outside the history")
        conn.execute(sa.text("UPDATE ml.woe_anchor_model_registry_v1 SET is_active = false WHERE is_active"))
        conn.execute(
            sa.text("UPDATE ml.woe_anchor_model_registry_v1 SET is_active = true WHERE model_key = :k"), {"k": key(3)}
        )
    before = state(engine)
    with pytest.raises(
        PromotionRefused,
        match=f"rollback refused: the active model is '{key(3)}', not '{key(2)}' "
        r"that the latest promotion \(#\d+\) activated",
    ):
        promote.rollback(engine, "t", "oops")
    assert state(engine) == before


def _artifact_counts(engine, model_key) -> list[int]:
    with engine.connect() as conn:
        return [
            conn.execute(sa.text(f"SELECT count(*) FROM {table} WHERE model_key = :k"), {"k": model_key}).scalar_one()
            for table in [
                "ml.woe_anchor_model_registry_v1",
                "ml.woe_anchor_cuts_v1",
                "ml.woe_anchor_map_v1",
                "ml.woe_anchor_scores_v1",
            ]
        ]


def test_deleting_a_candidate_removes_it_and_all_its_artifacts(certified_engine):
    engine = certified_engine
    add_candidates(engine, key(1), key(2))
    with engine.begin() as conn:
        # Artifacts are normally written with their model; the owner's break-glass adds one later here.
        break_glass(conn, "test: add fold cuts and scores", key(1))
        conn.execute(sa.text("INSERT INTO ml.woe_anchor_cuts_v1 VALUES (:k, 0, 0.4, 0.5, 10)"), {"k": key(1)})
        assert _scores_partitioned(conn), "ml.woe_anchor_scores_v1 is no longer partitioned per model"
        # one partition per model, named as training names it
        conn.execute(
            sa.text(
                f'CREATE TABLE ml."{_partition(conn, key(1))}" PARTITION OF ml.woe_anchor_scores_v1 '
                f"FOR VALUES IN ('{key(1)}')"
            )
        )
        conn.execute(
            sa.text(
                "INSERT INTO ml.woe_anchor_scores_v1 (model_key, generation, listing_id, t0, fold_id, is_oof, woe_logit, "
                "p_slow21, slow21) SELECT :k, generation, listing_id, t0, 0, true, 0, 0.5, 1 "
                "FROM ml.socio_market_snapshots LIMIT 5"
            ),
            {"k": key(1)},
        )
    with engine.connect() as conn:
        n_map = conn.execute(
            sa.text("SELECT count(*) FROM ml.woe_anchor_map_v1 WHERE model_key = :k"), {"k": key(1)}
        ).scalar_one()
    assert n_map == sum(map(len, VALUES.values())), "the demo data shows every band value"
    assert _artifact_counts(engine, key(1)) == [1, 2, n_map, 5]
    with engine.connect() as conn:
        partition = f'ml."{_partition(conn, key(1))}"'
        assert conn.execute(sa.text("SELECT to_regclass(:t)"), {"t": partition}).scalar() is not None
    promote.delete_candidate(engine, key(1))
    assert _artifact_counts(engine, key(1)) == [0, 0, 0, 0]
    assert _artifact_counts(engine, key(2))[0] == 1
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT to_regclass(:t)"), {"t": partition}).scalar() is None


def _partition(conn, model_key: str) -> str:
    return conn.execute(sa.text("SELECT ml.woe_anchor_scores_partition_name(:k)"), {"k": model_key}).scalar_one()


def _scores_partitioned(conn) -> bool:
    return conn.execute(
        sa.text(
            "SELECT EXISTS (SELECT FROM pg_partitioned_table WHERE partrelid = 'ml.woe_anchor_scores_v1'::regclass)"
        )
    ).scalar_one()


@pytest.mark.parametrize(
    ("target", "message"),
    [
        (key(2), f"model '{key(2)}' cannot be deleted: it is the active model"),
        (key(1), f"model '{key(1)}' cannot be deleted: it appears in the promotion history \\(promotion #\\d+\\)"),
        (key(9), f"model '{key(9)}' cannot be deleted: it does not exist"),
    ],
)
def test_deleting_the_active_or_a_promoted_model_is_refused(certified_engine, target, message):
    engine = certified_engine
    add_candidates(engine, key(1), key(2))
    promote.promote(engine, key(1), "t", "first")
    promote.promote(engine, key(2), "t", "second")
    before = state(engine)
    with pytest.raises(PromotionRefused, match=message):
        promote.delete_candidate(engine, target)
    assert state(engine) == before
    if target != key(9):
        with pytest.raises(DBAPIError), engine.begin() as conn:  # nor by a plain DELETE
            conn.execute(sa.text("DELETE FROM ml.woe_anchor_model_registry_v1 WHERE model_key = :k"), {"k": target})
        assert state(engine) == before


def test_history_is_append_only(certified_engine):
    add_candidates(certified_engine, key(1))
    promote.promote(certified_engine, key(1), "t", "first")
    for sql in [
        "UPDATE ml.woe_anchor_promotions_v1 SET reason = 'rewritten'",
        "DELETE FROM ml.woe_anchor_promotions_v1",
        "TRUNCATE ml.woe_anchor_promotions_v1",
    ]:
        with (
            pytest.raises(DBAPIError, match="ml.woe_anchor_promotions_v1 is append-only"),
            certified_engine.begin() as conn,
        ):
            conn.execute(sa.text(sql))
    assert len(promote.history(certified_engine)) == 1


@pytest.mark.parametrize("limit", [0, -1, 1.5, True, "10"])
def test_history_rejects_a_bad_limit(engine, limit):
    with pytest.raises(InvalidParameter, match=f"limit must be an integer in \\[1, 100000\\], got {limit!r}"):
        promote.history(engine, limit)


def test_rows_cannot_be_added_to_a_model_registered_earlier(certified_engine):
    """Otherwise a map row inserted by a transaction open during a promotion would join the active model."""
    add_candidates(certified_engine, key(1))
    for sql in [
        "INSERT INTO ml.woe_anchor_cuts_v1 VALUES (:k, 3, 0.1, 0.2, 0)",
        "INSERT INTO ml.woe_anchor_map_v1 VALUES (:k, 3, 'dsold', 'dSold_low', 0.5, 1, 1, 1, 1)",
    ]:
        with (
            pytest.raises(
                DBAPIError,
                match=f"rows of model '{key(1)}' can only be added in the transaction that registers the model",
            ),
            certified_engine.begin() as conn,
        ):
            conn.execute(sa.text(sql), {"k": key(1)})
    assert all(c.passed is not False for c in promote.preflight(certified_engine, key(1)))
