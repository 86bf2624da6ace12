"""WOE anchor model review app: ``streamlit run app.py``.

With no ``WOE_DATABASE_URL`` (environment or Streamlit secrets) the app starts an
embedded PostgreSQL, applies ``sql/`` and, on first start, loads and certifies a
demo marketplace.
"""

import os

import streamlit as st

from woe_core import bootstrap, db
from woe_core.errors import WoeError
from woe_core.identity import local_actor

st.set_page_config(page_title="WOE anchor model", layout="wide")


@st.cache_resource(show_spinner="Starting the database and loading demo data (first start only)...")
def ready_engine(url: str | None):
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


try:
    st.session_state["engine"] = ready_engine(_configured_url())
except WoeError as exc:
    st.error(str(exc))
    st.stop()

navigation = st.navigation([st.Page("pages/home.py", title="Home", icon=":material/home:", default=True)])
navigation.run()
