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
compiling=""
if [ ! -x .venv/bin/python ] || [ "$(cat .venv/.requirements.sha 2>/dev/null)" != "$want" ]; then
  echo "setup: installing Python packages into .venv"
  [ -x .venv/bin/python ] || "$PY" -m venv .venv
  .venv/bin/pip install -q --upgrade pip
  if [ "$(head -1 requirements.lock 2>/dev/null)" = "# requirements.txt sha256 $want" ]; then
    # requirements.lock (scripts/lock.sh) is the resolved set: no resolving, and two pip processes side by side, since
    # unpacking is CPU-bound on one core: the CUDA libraries torch's wheel loads, and the rest. The sets share no
    # files; pip check then confirms that every dependency is there.
    grep -v '^#' requirements.lock | grep -iE '^(nvidia|cuda)-' > .venv/lock-cuda.txt
    grep -v '^#' requirements.lock | grep -viE '^(nvidia|cuda)-' > .venv/lock-rest.txt
    .venv/bin/pip install -q --no-compile --no-deps -r .venv/lock-cuda.txt &
    cuda=$!
    .venv/bin/pip install -q --no-compile --no-deps -r .venv/lock-rest.txt
    wait "$cuda"
    .venv/bin/pip check > /dev/null
  else
    echo "setup: requirements.lock is not from this requirements.txt (run scripts/lock.sh); resolving instead"
    .venv/bin/pip install -q --no-compile -r requirements.txt
  fi
  echo "$want" > .venv/.requirements.sha
  # no byte-compiling inside pip (one process); compileall on every core instead, beside the decoder files' build
  # below. A file that does not compile (code for another Python version inside a package) is skipped, as pip does.
  .venv/bin/python -m compileall -q -j 0 .venv/lib > /dev/null 2>&1 &
  compiling=$!
fi

# The beam decoder's lexicon + word LM (built offline from wordfreq, the KJV, WordNet and number phrases;
# cached by recipe, so this is a no-op once built).
.venv/bin/python -m dld_core build-lm > /dev/null
[ -z "$compiling" ] || wait "$compiling" || true
