"""Command line: ``python -m woe_core COMMAND`` for schedulers and operators.

Every command prints a readable result; a ``WoeError`` is printed as one line on
stderr with exit code 1 (2 for usage errors), never as a traceback.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime

import pandas as pd
from sqlalchemy.exc import DBAPIError

from . import bootstrap, certify, db, demo, listings, migrations, promote, registry, score, train
from .bands import DEFAULT_DSOLD_THRESHOLDS
from .errors import WoeError
from .identity import local_actor


def _engine(args: argparse.Namespace):
    return db.get_engine(args.database_url)


def cmd_init_db(args: argparse.Namespace) -> int:
    applied = migrations.migrate(_engine(args))
    print("applied: " + ", ".join(m.path.name for m in applied) if applied else "database is up to date")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    engine = _engine(args)
    migrations.migrate(engine)
    counts = demo.load_demo(engine, args.listings, seed=args.seed)
    print(f"loaded demo marketplace: {counts['socio_rows']:,} snapshots, {counts['image_rows']:,} image rows")
    if not args.no_certify:
        return _print_certification(certify.certify(engine, args.actor or local_actor()))
    return 0


def _print_certification(cert: certify.Certification) -> int:
    print(cert.summary())
    for check in cert.checks:
        mark = "ok  " if check.passed else "FAIL"
        print(f"  {mark} {check.name:<32} {check.violations:>10,}  {check.description}")
    return 0 if cert.passed else 1


def cmd_certify(args: argparse.Namespace) -> int:
    return _print_certification(certify.certify(_engine(args), args.actor or local_actor(), args.dataset))


def cmd_status(args: argparse.Namespace) -> int:
    engine = _engine(args)
    info = db.describe(engine)
    print(f"database: {info.kind} {info.location} (PostgreSQL {info.server_version})")
    print(f"snapshots: {bootstrap.snapshot_count(engine):,}")
    st = certify.status(engine)
    print(f"certification: {st.reason}" + (f" (#{st.latest.certification_id}, age {st.age})" if st.latest else ""))
    print(f"active model: {registry.active_model_key(engine) or 'none'}")
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    models = registry.list_models(_engine(args))
    if models.empty:
        print("no models registered")
    else:
        columns = ["model_key", "is_active", "created_at", "created_by", "train_cutoff_ts", "half_life_days", "eps",
                   "n_folds", "base_rate", "oof_auc", "eval_auc"]
        print(models[columns].to_string(index=False))
    return 0


def cmd_score(args: argparse.Namespace) -> int:
    frame = score.lookup(_engine(args), args.listing_id, model_key=args.model)
    if frame.empty:
        print(f"listing {args.listing_id} has no snapshot")
        return 1
    for _, row in frame.iterrows():
        print(f"{row['model_key']}  listing {row['listing_id']}  t0 {row['t0']}  "
              f"p_slow21 {row['woe_anchor_p_slow21']:.4f}  woe_logit {row['woe_logit']:+.4f}")
        with pd.option_context("display.width", 120):
            print(score.contributions(row).to_string(index=False))
    return 0


def cmd_listings(args: argparse.Namespace) -> int:
    """Existing listing ids to look up: the newest, those from an id on, or a random one."""
    engine = _engine(args)
    if args.random:
        found = listings.random_listing(engine)
        print(found if found is not None else "no listings")
        return 0 if found is not None else 1
    rows = listings.from_id(engine, args.from_id, args.recent) if args.from_id is not None \
        else listings.newest(engine, args.recent)
    print(rows.to_string(index=False) if len(rows) else "no listings")
    return 0


def _add_listings_parser(sub) -> None:
    p = sub.add_parser("listings", help="existing listing ids to score: the newest, from an id on, or a random one")
    p.add_argument("--recent", type=int, default=10, metavar="N", help="how many (1 to 100, default 10)")
    p.add_argument("--from-id", type=int, default=None, metavar="ID", help="the first N ids at or above ID")
    p.add_argument("--random", action="store_true", help="one random existing listing id")
    p.set_defaults(func=cmd_listings)


def _utc_datetime(text: str) -> datetime:
    """ISO date or datetime; a value without a zone is taken as UTC."""
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an ISO date or datetime like 2026-08-01 or "
                                         f"2026-08-01T12:00+00:00, got {text!r}") from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def cmd_train(args: argparse.Namespace) -> int:
    params = train.TrainParams(args.cutoff, args.half_life, args.eps, args.folds, tuple(args.dsold_thresholds))
    started = time.perf_counter()

    def progress(step: str, fraction: float) -> None:
        print(f"[{fraction:4.0%}] {step} ({time.perf_counter() - started:.1f} s)", file=sys.stderr, flush=True)

    result = train.train(_engine(args), params, args.actor or local_actor(), progress=progress)
    print(result.summary())
    iv = result.metrics["information_value"]
    print("information value: " + ", ".join(f"{b} {v:.3f}" for b, v in sorted(iv.items(), key=lambda x: -x[1])))
    flips = [f"{s['band_name']}:{s['band_value']}" for s in result.metrics["fold_stability"] if s["sign_flip"]]
    print("sign flips across folds: " + (", ".join(flips) if flips else "none"))
    return 0


def cmd_promote(args: argparse.Namespace) -> int:
    engine = _engine(args)
    failed = [c for c in promote.preflight(engine, args.model_key) if not c.passed]
    for check in failed:
        print(f"  FAIL {check.name}: {check.detail}", file=sys.stderr)
    promotion_id = promote.promote(engine, args.model_key, args.actor or local_actor(), args.reason)
    print(f"promoted {args.model_key} (history #{promotion_id})")
    return 0


def cmd_rollback(args: argparse.Namespace) -> int:
    key = promote.rollback(_engine(args), args.actor or local_actor(), args.reason)
    print(f"rolled back: {key} is active again")
    return 0


def cmd_history(args: argparse.Namespace) -> int:
    history = promote.history(_engine(args), limit=args.limit)
    print(history.to_string(index=False) if len(history) else "no promotion recorded")
    return 0


def cmd_delete(args: argparse.Namespace) -> int:
    promote.delete_candidate(_engine(args), args.model_key)
    print(f"deleted candidate {args.model_key} and all its artifacts")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m woe_core", description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", default=None,
                        help="PostgreSQL URL (default: WOE_DATABASE_URL, else the embedded server)")
    sub = parser.add_subparsers(dest="command", required=True)

    sub.add_parser("init-db", help="apply pending SQL migrations").set_defaults(func=cmd_init_db)

    p = sub.add_parser("demo", help="replace the feature stores with a synthetic marketplace and certify it")
    p.add_argument("--listings", type=int, default=bootstrap.FIRST_START_DEMO_LISTINGS)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--actor", default=None)
    p.add_argument("--no-certify", action="store_true")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("certify", help="check, hash and record a certification of the input dataset")
    p.add_argument("--dataset", default=certify.ENTRYPOINT)
    p.add_argument("--actor", default=None, help="who certifies (default: WOE_ACTOR or the OS user)")
    p.set_defaults(func=cmd_certify)

    p = sub.add_parser("train", help="train a candidate model from the certified feature stores")
    p.add_argument("--cutoff", type=_utc_datetime, required=True, help="train_cutoff_ts (ISO; UTC if no zone)")
    p.add_argument("--half-life", type=float, default=train.TrainParams.half_life_days, help="days (> 0)")
    p.add_argument("--eps", type=float, default=train.TrainParams.eps, help="pseudo-count of weight (> 0)")
    p.add_argument("--folds", type=int, default=train.TrainParams.n_folds, help="K >= 2")
    p.add_argument("--dsold-thresholds", type=float, nargs=4, metavar=("T1", "T2", "T3", "T4"),
                   default=list(DEFAULT_DSOLD_THRESHOLDS), help="strictly increasing")
    p.add_argument("--actor", default=None, help="who trains (default: WOE_ACTOR or the OS user)")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("promote", help="make a candidate the active model (atomic, recorded with a reason)")
    p.add_argument("model_key")
    p.add_argument("--reason", required=True)
    p.add_argument("--actor", default=None, help="who promotes (default: WOE_ACTOR or the OS user)")
    p.set_defaults(func=cmd_promote)

    p = sub.add_parser("rollback", help="promote the model that was active before the current one")
    p.add_argument("--reason", required=True)
    p.add_argument("--actor", default=None)
    p.set_defaults(func=cmd_rollback)

    p = sub.add_parser("history", help="promotion history, newest first")
    p.add_argument("--limit", type=int, default=20)
    p.set_defaults(func=cmd_history)

    p = sub.add_parser("delete", help="delete a never-promoted candidate and all its artifacts")
    p.add_argument("model_key")
    p.set_defaults(func=cmd_delete)

    sub.add_parser("status", help="database, data, certification and active model").set_defaults(func=cmd_status)
    sub.add_parser("models", help="list the model registry").set_defaults(func=cmd_models)

    p = sub.add_parser("score", help="guarded live score of a listing, with its per-band explanation "
                                     "(find ids with: listings)")
    p.add_argument("listing_id", type=int)
    p.add_argument("--model", default=None, help="score under this model instead of the active one")
    p.set_defaults(func=cmd_score)
    _add_listings_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except WoeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except DBAPIError as exc:  # the database refused: its first message line, never a traceback
        orig = exc.orig
        message = str(orig).strip().splitlines()[0] if orig is not None else str(exc).splitlines()[0]
        hint = ""
        if getattr(orig, "sqlstate", None) in ("42P01", "3F000"):  # undefined table / schema
            hint = " (is the database migrated? run: python -m woe_core init-db)"
        print(f"error: database: {message}{hint}", file=sys.stderr)
        return 1
