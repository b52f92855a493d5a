#!/usr/bin/env bash
# Write requirements.lock: every package that `pip install -r requirements.txt` installs here (Linux x86_64,
# CPython 3.11), pinned, headed by the SHA-256 of requirements.txt it was resolved from. scripts/setup.sh installs
# from it without resolving, in two pip processes side by side (the CUDA libraries that torch's wheel needs, and the
# rest): pip's unpacking is CPU-bound on one core. Run it after any change to requirements.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3 -m venv "$tmp/venv"
"$tmp/venv/bin/pip" install -q --upgrade pip
"$tmp/venv/bin/pip" install -q --dry-run --ignore-installed --report "$tmp/report.json" -r requirements.txt
python3 - "$tmp/report.json" > requirements.lock.tmp <<'PY'
import hashlib, json, sys
report = json.load(open(sys.argv[1]))
pins = sorted(f"{i['metadata']['name']}=={i['metadata']['version']}" for i in report["install"])
print(f"# requirements.txt sha256 {hashlib.sha256(open('requirements.txt', 'rb').read()).hexdigest()}")
print("# Written by scripts/lock.sh (do not edit): every package requirements.txt installs, pinned.")
print("\n".join(pins))
PY
mv requirements.lock.tmp requirements.lock
echo "requirements.lock: $(grep -vc '^#' requirements.lock) packages"
