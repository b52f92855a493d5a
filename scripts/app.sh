#!/usr/bin/env bash
# Set everything up (idempotent) and start DLD Studio on the shipped checkpoints.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/streamlit run app/streamlit_app.py "$@"
