"""DLD Studio — entry point:  streamlit run app/streamlit_app.py"""
from __future__ import annotations

import sys
from pathlib import Path

import streamlit as st

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

# The tab icon is an emoji, drawn by the browser: a ":material/...:" page icon makes the browser fetch an SVG
# from fonts.gstatic.com, and the app makes no request off this machine (offline classrooms, privacy). The
# Material icons inside the pages come from the font bundled with Streamlit.
# The sidebar starts 400 px wide (shown on a desktop, folded on a phone): its model pickers show labels such as
# "scratch/teacher · Teacher · valid WER 55.0%" whole at 1400 px.
SIDEBAR_WIDTH = 400
st.set_page_config(page_title="DLD Studio", page_icon="🎚️", layout="wide", initial_sidebar_state=SIDEBAR_WIDTH)

# The page scripts live in app/app_pages/, not app/pages/: a folder named "pages" next to the entry script
# switches Streamlit to its legacy multipage mode (every file there becomes a page that can be opened
# directly, bypassing this script and st.navigation).
from app.state.torch_setup import configure_torch, warm_up_flop_counter  # noqa: E402  (after the sys.path fix)

configure_torch()
warm_up_flop_counter()

PAGES = Path(__file__).resolve().parent / "app_pages"
HOW = st.Page(PAGES / "how_dld_works.py", title="How DLD works", icon=":material/school:", url_path="how-it-works")


def open_start() -> None:
    """The app root ("/") opens How DLD works, which orients a newcomer (the idea, a picture, a three-step
    experiment) and links each audience to its page. It is not the default page itself: Streamlit serves a
    default page at "/" only, so a typed /how-it-works would show "Page not found"; as a page of its own it has
    both."""
    st.switch_page(HOW)


# A direct link such as /how-it-works makes the browser log two 404s, for /how-it-works/_stcore/health and
# /how-it-works/_stcore/host-config: Streamlit's frontend probes the page path as a possible server base path
# before the root (streamlit/streamlit#7074, open upstream). The app cannot answer them: a 200 there would make
# the frontend take /<page> as the base path and open the default page instead of the one linked. Harmless.
nav = st.navigation([
    st.Page(open_start, title="DLD Studio", url_path="start", default=True, visibility="hidden"),
    HOW,
    st.Page(PAGES / "inspect.py", title="Inspect", icon=":material/graphic_eq:", url_path="inspect"),
    st.Page(PAGES / "budgets.py", title="Budgets", icon=":material/speed:", url_path="budgets"),
    st.Page(PAGES / "importance.py", title="Layer importance", icon=":material/bar_chart:", url_path="importance"),
    st.Page(PAGES / "train.py", title="Train", icon=":material/model_training:", url_path="train"),
])
with st.sidebar:
    st.markdown("### :material/layers: DLD Studio")
    st.caption("Distillation-based layer dropping for speech recognition (CTC, or Whisper's text decoder): "
               "one model, any depth, picked per request.")
nav.run()
