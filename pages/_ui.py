"""Shared page plumbing: the engine, the reviewer, errors as messages, cache invalidation."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TypeVar

import streamlit as st

from woe_core import bootstrap, db
from woe_core.errors import WoeError
from woe_core.identity import local_actor
from woe_core.reviewer import Reviewer, Settings, reviewer_from, settings_from

T = TypeVar("T")


def _use_app_navigation() -> None:
    """Make app.py's st.navigation the only page registry, even on a deep link into a fresh server.

    A ``pages/`` folder beside the main script switches Streamlit into its legacy
    folder-based navigation until some session has run ``st.navigation``; a first
    visit straight to ``/promote`` would then run that page alone with a plain file
    list in the sidebar. Leaving that mode once and rerunning routes every session
    through app.py. (The flag is Streamlit's own; tests/test_browser.py checks the
    sidebar of a deep link.)
    """
    from streamlit.runtime.pages_manager import PagesManager

    if PagesManager.uses_pages_directory:
        PagesManager.uses_pages_directory = False
        st.rerun()


_use_app_navigation()


@st.cache_resource(show_spinner="Starting the database and loading demo data (first start only)...")
def _ready_engine(url: str | None):
    """One engine per database URL per process, migrated, with demo data on a fresh embedded database."""
    engine = db.get_engine(url)
    bootstrap.ensure_ready(engine, local_actor())
    return engine


def _configured_url() -> str | None:
    """``WOE_DATABASE_URL`` from the environment, else from Streamlit secrets, else None (embedded)."""
    if os.environ.get("WOE_DATABASE_URL"):
        return os.environ["WOE_DATABASE_URL"]
    try:
        return st.secrets.get("WOE_DATABASE_URL")
    except Exception:  # no secrets.toml at all
        return None


def engine():
    """The ready engine; on a database error, show it and stop the page (never a traceback)."""
    try:
        return _ready_engine(_configured_url())
    except WoeError as exc:
        st.error(str(exc))
        st.stop()


def settings() -> Settings:
    try:
        secrets = st.secrets
        login = "auth" in secrets
    except Exception:  # no secrets.toml
        secrets, login = None, False
    return settings_from(os.environ, secrets, login)


def reviewer() -> Reviewer:
    s = settings()
    user = st.user.to_dict() if s.login_configured else None
    return reviewer_from(user, s)


def attempt(action: Callable[[], T]) -> T | None:
    """Run a woe_core call; show a WoeError as st.error and return None instead of raising."""
    try:
        return action()
    except WoeError as exc:
        st.error(str(exc))
        return None


def changed() -> None:
    """Forget cached reads after a write (train, certify, promote)."""
    st.cache_data.clear()


def query_list(name: str) -> list[str]:
    raw = st.query_params.get(name, "")
    return [x for x in raw.split(",") if x]


def seed(key: str, value: object) -> None:
    """Give the widget ``key`` its start value once, when the session has none yet.

    Widgets then keep exactly what the user chose: their value lives in session
    state under ``key`` and is never passed again as ``value=`` or ``index=``.
    """
    if key not in st.session_state:
        st.session_state[key] = value


def flash(kind: str, message: str) -> None:
    """Keep a one-shot message ("success", "error", "warning") to show at the top of the next run."""
    st.session_state["_flash"] = (kind, message)


def show_flash() -> None:
    """Show and forget the message kept by ``flash`` (call it right below the page title)."""
    kept = st.session_state.pop("_flash", None)
    if kept:
        getattr(st, kept[0])(kept[1])


def after_action(kind: str, message: str) -> None:
    """After a write: forget cached reads, keep ``message`` for the top of the page, redraw everything."""
    changed()
    flash(kind, message)
    st.rerun()
