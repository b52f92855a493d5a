"""DLD Studio — entry point:  streamlit run app/streamlit_app.py"""
from __future__ import annotations

import sys
from pathlib import Path

import streamlit as st

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

st.set_page_config(page_title="DLD Studio", page_icon=":material/layers:", layout="wide",
                   initial_sidebar_state="expanded")

# The page scripts live in app/app_pages/, not app/pages/: a folder named "pages" next to the entry script
# switches Streamlit to its legacy multipage mode (every file there becomes a page that can be opened
# directly, bypassing this script and st.navigation).
from app import state  # noqa: E402  (after the sys.path fix)

state.configure_torch()
state.warm_up_flop_counter()

PAGES = Path(__file__).resolve().parent / "app_pages"
INSPECT = st.Page(PAGES / "inspect.py", title="Inspect", icon=":material/graphic_eq:", url_path="inspect")


def open_inspect() -> None:
    """The app root ("/") opens Inspect. Inspect itself is not the default page: Streamlit serves a default
    page at "/" only, so a typed /inspect would show "Page not found"; as a page of its own it has both."""
    st.switch_page(INSPECT)


nav = st.navigation([
    st.Page(open_inspect, title="DLD Studio", url_path="start", default=True, visibility="hidden"),
    st.Page(PAGES / "how_dld_works.py", title="How DLD works", icon=":material/school:", url_path="how-it-works"),
    INSPECT,
    st.Page(PAGES / "budgets.py", title="Budgets", icon=":material/speed:", url_path="budgets"),
    st.Page(PAGES / "importance.py", title="Layer importance", icon=":material/bar_chart:", url_path="importance"),
    st.Page(PAGES / "train.py", title="Train", icon=":material/model_training:", url_path="train"),
])
with st.sidebar:
    st.markdown("### :material/layers: DLD Studio")
    st.caption("Distillation-based layer dropping for CTC speech recognition: "
               "one model, any depth, picked per request.")
nav.run()
