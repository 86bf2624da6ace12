"""WOE anchor model review app: ``streamlit run app.py``.

With no ``WOE_DATABASE_URL`` (environment or Streamlit secrets) the app starts an
embedded PostgreSQL, applies ``sql/`` and, on first start, loads and certifies a
demo marketplace. Pages live in ``pages/`` and only call ``woe_core``.
"""

import streamlit as st

from pages._ui import engine

st.set_page_config(page_title="WOE anchor model", layout="wide")
engine()  # start and migrate the database before any page renders

navigation = st.navigation({
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
})
navigation.run()
