"""Command line: ``woe COMMAND`` (or ``python -m woe_core COMMAND``) for schedulers and operators.

Every command prints a readable result. Every refusal or error is one line on
stderr starting with ``error:`` and exit code 1 (2 for a malformed command line),
never a traceback; a reader that closes the pipe early (``| head``) ends the
command quietly. Text that users or the database supply (actors, reasons, model
keys, dataset names) is printed with its control characters escaped.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import pandas as pd
from sqlalchemy.exc import DBAPIError

from . import bootstrap, certify, db, demo, listings, migrations, overview, promote, registry, score, train
from .bands import DEFAULT_DSOLD_THRESHOLDS
from .display import human_duration, terminal_text
from .errors import CertificationRequired, PromotionRefused, WoeError
from .identity import local_actor

PROG = "python -m woe_core"


class CommandFailed(Exception):
    """A refusal the CLI itself reports (exit code 1); its message is the text after ``error:``."""


def _engine(args: argparse.Namespace):
    return db.get_engine(args.database_url)


def _say(text: str) -> None:
    """Print ``text`` line by line with control characters escaped (terminal escapes are shown, not obeyed)."""
    for line in str(text).split("\n"):
        print(terminal_text(line))


def _table(frame: pd.DataFrame) -> str:
    """``frame`` as a text table whose text cells are made terminal-safe one by one."""
    shown = frame.copy()
    for name in shown.columns:
        if shown[name].dtype == object or pd.api.types.is_string_dtype(shown[name].dtype):
            cells = [v if v is None or not isinstance(v, str) else terminal_text(v) for v in shown[name]]
            shown[name] = pd.Series(cells, index=shown.index, dtype=object)
    return shown.to_string(index=False)


def cmd_init_db(args: argparse.Namespace) -> int:
    applied = migrations.migrate(_engine(args))
    _say("applied: " + ", ".join(m.path.name for m in applied) if applied else "database is up to date")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    engine = _engine(args)
    migrations.migrate(engine)
    started = time.perf_counter()
    counts = demo.load_demo(engine, args.listings, seed=args.seed)
    peak = _peak_memory_mb()
    print(
        f"loaded demo marketplace: {counts['socio_rows']:,} snapshots, {counts['image_rows']:,} image rows "
        f"in {human_duration(timedelta(seconds=time.perf_counter() - started))}"
        + (f", peak memory of this process {peak:,.0f} MB" if peak is not None else "")
    )
    if not args.no_certify:
        return _print_certification(certify.certify(engine, args.actor or local_actor()))
    return 0


def _peak_memory_mb() -> float | None:
    """This process's peak resident memory (VmHWM of /proc/self/status) in MB; None without /proc."""
    kib = demo.proc_kib("/proc/self/status", "VmHWM")
    return None if kib is None else kib / 1024


def _print_certification(cert: certify.Certification) -> int:
    _say(cert.summary())
    for check in cert.checks:
        mark = "ok  " if check.passed else "FAIL"
        _say(f"  {mark} {check.name:<32} {check.violations:>10,}  {check.description}")
    return 0 if cert.passed else 1


def cmd_distribute(args: argparse.Namespace) -> int:
    from . import distribute

    result = distribute.distribute(_engine(args))
    for fk in result.dropped_foreign_keys:
        _say(f"dropped foreign key {fk} (a distributed table may reference only distributed or reference tables)")
    if result.worker_markers:
        _say(
            "created the node-local change counters (used while rows are copied into new shards) on workers "
            + ", ".join(result.worker_markers)
        )
    for table in result.distributed:
        _say(f"distributed {table} by {distribute.distribution_column(table)}")
    for grant in result.granted:
        _say(f"granted {grant} (Citus runs shard queries as the session's user)")
    if result.rekeyed_counter_shards:
        _say(
            f"re-keyed the change counts of {len(result.rekeyed_counter_shards)} counter shards "
            "(keys that hash into their shard, so Citus can split shards; counts unchanged)"
        )
    if not result.changed:
        _say("already distributed: nothing to do")
    _say(_table(pd.DataFrame(distribute.layout(_engine(args)))))
    return 0


def cmd_certify(args: argparse.Namespace) -> int:
    return _print_certification(certify.certify(_engine(args), args.actor or local_actor(), args.dataset))


def cmd_status(args: argparse.Namespace) -> int:
    engine = _engine(args)
    info = db.describe(engine)
    _say(f"database: {info.kind} {info.location} (PostgreSQL {info.server_version})")
    st = certify.status(engine)
    # Exact while a passed certification covers unchanged data or the stores are small,
    # otherwise the planner's estimate ("≈"): never a count of every row.
    _say(f"snapshots: {overview.data_counts(engine, certification=st).show('snapshots')}")
    age = f", age {human_duration(st.age)}" if st.age is not None else ""
    _say(f"certification: {st.reason}" + (f" (#{st.latest.certification_id}{age})" if st.latest else ""))
    _say(f"active model: {registry.active_model_key(engine) or 'none'}")
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    models = registry.list_models(_engine(args))
    if models.empty:
        print("no models registered")
    else:
        columns = [
            "model_key",
            "is_active",
            "created_at",
            "created_by",
            "train_cutoff_ts",
            "half_life_days",
            "eps",
            "n_folds",
            "base_rate",
            "oof_auc",
            "eval_auc",
        ]
        print(_table(models[columns]))
    return 0


def cmd_score(args: argparse.Namespace) -> int:
    frame = score.lookup(_engine(args), args.listing_id, model_key=args.model)
    if frame.empty:
        raise CommandFailed(f"listing {args.listing_id} has no snapshot in the feature store")
    for _, row in frame.iterrows():
        _say(
            f"{row['model_key']}  listing {row['listing_id']}  t0 {row['t0']}  "
            f"p_slow21 {row['woe_anchor_p_slow21']:.4f}  woe_logit {row['woe_logit']:+.4f}"
        )
        with pd.option_context("display.width", 120):
            print(_table(score.contributions(row)))
    return 0


def cmd_listings(args: argparse.Namespace) -> int:
    """Existing listing ids to look up: the newest, those from an id on, or a random one."""
    engine = _engine(args)
    if args.random:
        found = listings.random_listing(engine)
        print(found if found is not None else "no listings")
        return 0 if found is not None else 1
    rows = (
        listings.from_id(engine, args.from_id, args.recent)
        if args.from_id is not None
        else listings.newest(engine, args.recent)
    )
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
        raise argparse.ArgumentTypeError(
            f"expected an ISO date or datetime like 2026-08-01 or 2026-08-01T12:00+00:00, got {text!r}"
        ) from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def cmd_train(args: argparse.Namespace) -> int:
    params = train.TrainParams(args.cutoff, args.half_life, args.eps, args.folds, tuple(args.dsold_thresholds))
    started = time.perf_counter()

    def progress(step: str, fraction: float) -> None:
        elapsed = human_duration(time.perf_counter() - started)
        print(terminal_text(f"[{fraction:4.0%}] {step} ({elapsed})"), file=sys.stderr, flush=True)

    result = train.train(_engine(args), params, args.actor or local_actor(), progress=progress)
    _say(result.summary())
    iv = result.metrics["information_value"]
    _say("information value: " + ", ".join(f"{b} {v:.3f}" for b, v in sorted(iv.items(), key=lambda x: -x[1])))
    flips = [f"{s['band_name']}:{s['band_value']}" for s in result.metrics["fold_stability"] if s["sign_flip"]]
    _say("sign flips across folds: " + (", ".join(flips) if flips else "none"))
    return 0


def cmd_promote(args: argparse.Namespace) -> int:
    engine = _engine(args)
    try:
        promotion_id = promote.promote(engine, args.model_key, args.actor or local_actor(), args.reason)
    except (PromotionRefused, CertificationRequired):  # every failed check in one line, not just the first
        failed = [c for c in promote.preflight(engine, args.model_key) if c.passed is False]
        if not failed:
            raise
        raise CommandFailed(
            f"promotion of {args.model_key!r} refused: " + "; ".join(f"{c.name}: {c.detail}" for c in failed)
        ) from None
    _say(f"promoted {args.model_key} (history #{promotion_id})")
    return 0


def cmd_rollback(args: argparse.Namespace) -> int:
    key = promote.rollback(_engine(args), args.actor or local_actor(), args.reason)
    _say(f"rolled back: {key} is active again")
    return 0


def cmd_history(args: argparse.Namespace) -> int:
    history = promote.history(_engine(args), limit=args.limit)
    print(_table(history) if len(history) else "no promotion recorded")
    return 0


def cmd_delete(args: argparse.Namespace) -> int:
    promote.delete_candidate(_engine(args), args.model_key)
    _say(f"deleted candidate {args.model_key} and all its artifacts")
    return 0


class _Parser(argparse.ArgumentParser):
    """argparse with its complaint as one ``error:`` line (exit code 2) instead of usage plus message."""

    def error(self, message: str):
        _error(f"{message} (see {self.prog} --help)")
        raise SystemExit(2)


def build_parser(prog: str = PROG) -> argparse.ArgumentParser:
    parser = _Parser(prog=prog, description=(__doc__ or "").splitlines()[0])
    parser.add_argument(
        "--database-url", default=None, help="PostgreSQL URL (default: WOE_DATABASE_URL, else the embedded server)"
    )
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    sub.add_parser("init-db", help="apply pending SQL migrations").set_defaults(func=cmd_init_db)

    p = sub.add_parser("demo", help="replace the feature stores with a synthetic marketplace and certify it")
    p.add_argument("--listings", type=int, default=bootstrap.FIRST_START_DEMO_LISTINGS)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--actor", default=None)
    p.add_argument("--no-certify", action="store_true")
    p.set_defaults(func=cmd_demo)

    sub.add_parser(
        "distribute", help="on a Citus coordinator: distribute the stores and scores by listing_id (idempotent)"
    ).set_defaults(func=cmd_distribute)

    p = sub.add_parser("certify", help="check, hash and record a certification of the input dataset")
    p.add_argument("--dataset", default=certify.ENTRYPOINT)
    p.add_argument("--actor", default=None, help="who certifies (default: WOE_ACTOR or the OS user)")
    p.set_defaults(func=cmd_certify)

    p = sub.add_parser("train", help="train a candidate model from the certified feature stores")
    p.add_argument("--cutoff", type=_utc_datetime, required=True, help="train_cutoff_ts (ISO; UTC if no zone)")
    p.add_argument("--half-life", type=float, default=train.TrainParams.half_life_days, help="days (> 0)")
    p.add_argument("--eps", type=float, default=train.TrainParams.eps, help="pseudo-count of weight (> 0)")
    p.add_argument("--folds", type=int, default=train.TrainParams.n_folds, help="K >= 2")
    p.add_argument(
        "--dsold-thresholds",
        type=float,
        nargs=4,
        metavar=("T1", "T2", "T3", "T4"),
        default=list(DEFAULT_DSOLD_THRESHOLDS),
        help="strictly increasing",
    )
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

    p = sub.add_parser(
        "score", help="guarded live score of a listing, with its per-band explanation (find ids with: listings)"
    )
    p.add_argument("listing_id", type=int)
    p.add_argument("--model", default=None, help="score under this model instead of the active one")
    p.set_defaults(func=cmd_score)
    _add_listings_parser(sub)
    return parser


def _error(message: str) -> None:
    """One line on stderr: ``error: message`` with control characters (newlines too) escaped."""
    print(f"error: {terminal_text(message)}", file=sys.stderr, flush=True)


def _database_message(exc: DBAPIError) -> str:
    """The database's refusal as one line, with a hint when the schema is missing."""
    orig = exc.orig
    text = str(orig if orig is not None else exc).strip()
    message = text.splitlines()[0] if text else type(orig or exc).__name__
    hint = ""
    if getattr(orig, "sqlstate", None) in ("42P01", "3F000"):  # undefined table / schema
        hint = " (is the database migrated? run: python -m woe_core init-db)"
    return f"database: {message}{hint}"


def _quiet_stdout() -> None:
    """After the reader of stdout went away: send what is still buffered nowhere (no second error at exit)."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def main(argv: Sequence[str] | None = None, prog: str = PROG) -> int:
    """Run one command; return the process exit code (0 ok, 1 refused or failed, 2 malformed command line)."""
    try:
        args = build_parser(prog).parse_args(argv)
        code = args.func(args)
        sys.stdout.flush()
        return code
    except BrokenPipeError:  # e.g. `woe history | head`: the reader has all it wanted
        _quiet_stdout()
        return 141  # 128 + SIGPIPE, what a shell reports for a command ended by a closed pipe
    except KeyboardInterrupt:
        _error("interrupted")
        return 130
    except (WoeError, CommandFailed) as exc:
        _error(str(exc))
        return 1
    except DBAPIError as exc:  # the database refused: its first message line, never a traceback
        _error(_database_message(exc))
        return 1


def run() -> None:
    """Entry point of the ``woe`` console script."""
    sys.exit(main(prog="woe"))
