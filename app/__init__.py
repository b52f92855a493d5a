"""DLD Studio: the Streamlit app (run with `streamlit run app/streamlit_app.py`)."""
