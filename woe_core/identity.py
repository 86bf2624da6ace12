"""Who is acting: recorded with every certification, model and promotion."""

from __future__ import annotations

import getpass
import os

from .errors import InvalidParameter


def local_actor() -> str:
    """The local actor name: ``WOE_ACTOR``, else the operating-system user."""
    name = os.environ.get("WOE_ACTOR") or _os_user()
    return require_actor(name)


def require_actor(actor: object) -> str:
    """``actor`` stripped, or ``InvalidParameter`` when it is not a non-empty string."""
    if not isinstance(actor, str) or not actor.strip():
        raise InvalidParameter(f"actor must be a non-empty name, got {actor!r}")
    if len(actor) > 200:
        raise InvalidParameter(f"actor must be at most 200 characters, got {len(actor)}")
    return actor.strip()


def _os_user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no user database entry (some containers)
        return "unknown"
