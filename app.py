"""WOE anchor model review app: ``streamlit run app.py``.

With no ``WOE_DATABASE_URL`` (environment or Streamlit secrets) the app starts an
embedded PostgreSQL, applies ``sql/`` and, on first start, loads and certifies a
demo marketplace. Pages live in ``pages/`` and only call ``woe_core``.
"""

import streamlit as st

from pages._ui import account_controls, app_pages, engine

st.set_page_config(page_title="WOE anchor model", layout="wide")
pages = app_pages()  # before engine(): it marks this session as routed through this navigation
engine()  # start and migrate the database before any page renders

navigation = st.navigation(pages)
account_controls()
navigation.run()
