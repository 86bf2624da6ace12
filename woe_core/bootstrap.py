"""Getting a database ready to use: migrations, and demo data on a fresh embedded server."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from . import certify, db, demo, migrations

FIRST_START_DEMO_LISTINGS = 20_000


def snapshot_count(engine: Engine) -> int:
    """Rows in the certified entrypoint (all snapshots)."""
    with engine.connect() as conn:
        return int(conn.execute(sa.text("SELECT count(*) FROM ml.woe_anchor_feature_store_t0_v1_v")).scalar_one())


def ensure_ready(engine: Engine, actor: str, demo_listings: int = FIRST_START_DEMO_LISTINGS) -> dict:
    """Apply pending migrations; on an empty embedded database, load and certify a demo.

    A real server (``WOE_DATABASE_URL``) never gets demo data implicitly.
    Returns what was done: applied migration names, demo row counts, certification id.
    """
    done: dict = {"migrations": [m.path.name for m in migrations.migrate(engine)]}
    if db.is_embedded(engine) and snapshot_count(engine) == 0:
        done["demo"] = demo.load_demo(engine, demo_listings)
        done["certification"] = certify.certify(engine, actor).certification_id
    return done
