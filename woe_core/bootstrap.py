"""Getting a database ready to use: migrations, and demo data on a fresh embedded server."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from . import certify, db, demo, migrations, promote, train

FIRST_START_DEMO_LISTINGS = 20_000
DEMO_BASELINE_REASON = "demo baseline: trained with default parameters and promoted on first start"


def has_snapshots(engine: Engine) -> bool:
    """True when the certified entrypoint has a row (reads one row, at any size)."""
    with engine.connect() as conn:
        return bool(
            conn.execute(sa.text("SELECT EXISTS (SELECT 1 FROM ml.woe_anchor_feature_store_t0_v1_v)")).scalar_one()
        )


def ensure_ready(engine: Engine, actor: str, demo_listings: int = FIRST_START_DEMO_LISTINGS) -> dict:
    """Apply pending migrations; on an empty embedded database, load and certify a demo.

    A real server (``WOE_DATABASE_URL``) never gets demo data implicitly.
    The demo arrives with a baseline model trained at the default cutoff and promoted
    through the normal promotion (reason ``DEMO_BASELINE_REASON``), so every page has
    something to show. Returns what was done: applied migration names, demo row
    counts, certification id, baseline model key.
    """
    done: dict = {"migrations": [m.path.name for m in migrations.migrate(engine)]}
    if db.is_embedded(engine) and not has_snapshots(engine):
        done["demo"] = demo.load_demo(engine, demo_listings)
        done["certification"] = certify.certify(engine, actor).certification_id
        done["baseline"] = demo_baseline(engine, actor)
    return done


def demo_baseline(engine: Engine, actor: str) -> str:
    """Train a model with default parameters at the default cutoff and promote it; returns its key."""
    t_min, t_max, _ = train.data_window(engine)
    key = train.train(engine, train.TrainParams(train.default_cutoff(t_min, t_max)), actor).model_key
    promote.promote(engine, key, actor, DEMO_BASELINE_REASON)
    return key
