"""Shared page plumbing: the engine, the reviewer, errors as messages, cache invalidation."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TypeVar

import streamlit as st

from woe_core import bootstrap, certify, db, train
from woe_core.display import markdown_text
from woe_core.errors import WoeError
from woe_core.identity import local_actor
from woe_core.reviewer import Reviewer, Settings, reviewer_from, settings_from

T = TypeVar("T")


_APP_NAVIGATION_KEY = "_woe_app_navigation"


def app_pages() -> dict[str, list]:
    """The app's pages by section, for ``st.navigation`` in app.py (and for ``_route_through_app`` below)."""
    st.session_state[_APP_NAVIGATION_KEY] = True  # this session has app.py's navigation from now on
    return {
        "Overview": [st.Page("pages/home.py", title="Home", icon=":material/home:", default=True)],
        "Models": [
            st.Page("pages/train.py", title="Train", icon=":material/model_training:"),
            st.Page("pages/compare.py", title="Compare", icon=":material/compare_arrows:"),
            st.Page("pages/promote.py", title="Promote", icon=":material/rocket_launch:"),
        ],
        "Data and scores": [
            st.Page("pages/certification.py", title="Certification", icon=":material/verified:"),
            st.Page("pages/lookup.py", title="Score lookup", icon=":material/search:"),
        ],
    }


def _route_through_app() -> None:
    """Rerun a page that Streamlit ran on its own through app.py's navigation.

    With a ``pages/`` folder beside the main script, Streamlit starts in its
    folder-based navigation and keeps to it until ``st.navigation`` has been called:
    the first request of a fresh server for ``/promote?model=...`` runs
    pages/promote.py alone, with a plain file list in the sidebar. Declaring the
    app's pages with ``st.navigation`` ends that mode (Streamlit documents that
    ``st.navigation`` makes it ignore the ``pages/`` folder), and since every page
    keeps its ``url_path``, ``st.rerun()`` then runs the same page with the same
    query parameters through app.py. tests/test_browser.py opens a deep link on a
    freshly started server and checks the page and its sidebar.
    """
    if not st.session_state.get(_APP_NAVIGATION_KEY):
        st.navigation(app_pages(), position="hidden")
        st.rerun()


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
    _route_through_app()  # every page asks for the engine first
    try:
        return _ready_engine(_configured_url())
    except WoeError as exc:
        st.error(markdown_text(exc))
        st.stop()


def settings() -> Settings:
    try:
        secrets = st.secrets
        login = "auth" in secrets
    except Exception:  # no secrets.toml
        secrets, login = None, False
    return settings_from(os.environ, secrets, login)


def account_controls() -> None:
    """Sign in / sign out in the sidebar when an identity provider is configured (``[auth]`` in secrets)."""
    if not settings().login_configured:
        return
    if st.user.is_logged_in:
        st.sidebar.caption(f"Signed in as {markdown_text(st.user.get('email') or st.user.get('name') or '?')}")
        st.sidebar.button("Sign out", on_click=st.logout)
    else:
        st.sidebar.button("Sign in", key="sidebar_sign_in", on_click=st.login)


def reviewer() -> Reviewer:
    s = settings()
    user = st.user.to_dict() if s.login_configured else None
    return reviewer_from(user, s)


def attempt(action: Callable[[], T]) -> T | None:
    """Run a woe_core call; show a WoeError as st.error and return None instead of raising."""
    try:
        return action()
    except WoeError as exc:
        st.error(markdown_text(exc))  # messages quote user input: shown literally, never as markdown
        return None


@st.cache_data(show_spinner="Reading the data's time range…")
def _data_range(db: str, version: tuple) -> tuple:
    return train.data_window(engine())


def data_range() -> tuple:
    """``train.data_window`` (a scan of every snapshot), read once per data version: the latest
    certification and the latest change of the data; a change or a new certification reads it again."""
    status = certify.status(engine())
    version = (status.latest.certification_id if status.latest else None, status.data_changed_at)
    return _data_range(engine().url.render_as_string(hide_password=True), version)


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
