#!/usr/bin/env bash
# Set everything up (idempotent) and run the whole test suite (browser tests included), one pytest-xdist worker per
# core (TEST_WORKERS, default 2; 0 runs in this process), a test file per worker at a time (--dist loadfile: a
# module's app server and fixtures stay in one worker).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m pytest -q -p no:cacheprovider -n "${TEST_WORKERS:-2}" --dist loadfile "$@" tests
