#!/usr/bin/env bash
# Idempotent setup on Debian (as root, or with sudo): system packages, then .venv from requirements.txt.
set -euo pipefail
cd "$(dirname "$0")/.."

# the Debian packages: one table, shared with tests/test_system_packages.py
mapfile -t APT_PACKAGES < <(awk '!/^#/ && NF {print $1}' scripts/system-packages.txt)
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  [ "$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null)" = "install ok installed" ] || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  echo "setup: installing system packages: ${missing[*]}"
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

PY=${PYTHON:-python3}
want=$(sha256sum requirements.txt | cut -d' ' -f1)
if [ ! -x .venv/bin/python ] || [ "$(cat .venv/.requirements.sha 2>/dev/null)" != "$want" ]; then
  echo "setup: installing Python packages into .venv"
  [ -x .venv/bin/python ] || "$PY" -m venv .venv
  .venv/bin/pip install -q --upgrade pip
  # no byte-compiling inside pip (one process); compileall on every core instead. A file that does not compile
  # (code for another Python version inside a package) is skipped, as pip skips it.
  .venv/bin/pip install -q --no-compile -r requirements.txt
  .venv/bin/python -m compileall -q -j 0 .venv/lib > /dev/null || true
  echo "$want" > .venv/.requirements.sha
fi

# The beam decoder's lexicon + word LM (built offline from wordfreq, the KJV, WordNet and number phrases;
# cached by recipe, so this is a no-op once built).
.venv/bin/python -m dld_core build-lm > /dev/null
