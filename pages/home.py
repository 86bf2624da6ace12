"""Home: the database in use, the input data, its certification and the active model."""

import streamlit as st

from woe_core.overview import overview

info = overview(st.session_state["engine"])
st.title("WOE anchor model — p_slow21")

db_info = info.database
where = "embedded PostgreSQL" if db_info.kind == "embedded" else f"server {db_info.location}"
st.caption(f"Database: {where} · PostgreSQL {db_info.server_version}")

c1, c2, c3, c4 = st.columns(4)
c1.metric("Snapshots", f"{info.snapshots:,}")
c2.metric("Listings", f"{info.listings:,}")
c3.metric("Image rows", f"{info.image_rows:,}")
c4.metric("Models", f"{info.models:,}")

st.subheader("Input data certification")
cert = info.certification
if cert.fresh:
    hours = cert.age.total_seconds() / 3600
    st.success(f"Certified {hours:.1f} h ago (limit 24 h) by {cert.latest.certified_by}: "
               f"{cert.latest.row_count:,} rows, sha256 `{cert.latest.dataset_sha256}`")
else:
    st.error(f"Live scores are refused: {cert.reason}. Certify with `python -m woe_core certify`.")

st.subheader("Active model")
st.write(f"`{info.active_model}`" if info.active_model else "No model is active yet.")
