#!/usr/bin/env bash
# Runs the real Python client `nilauth-credit-middleware` 0.1.3 against a
# real Reckon server. Needs the reckon binary (RECKON_BIN, default
# target/debug/reckon) and python3 with venv and pip.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../../.." && pwd)"
venv="$root/target/interop-venv"
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
# pip is quick when everything is already installed.
"$venv/bin/pip" install --quiet --disable-pip-version-check -r "$here/requirements-runtime.txt"
"$venv/bin/pip" install --quiet --disable-pip-version-check --ignore-requires-python --no-deps -r "$here/requirements.txt"
export RECKON_BIN="${RECKON_BIN:-$root/target/debug/reckon}"
cd "$here"
exec "$venv/bin/python" -m pytest -q -p no:cacheprovider test_nilauth_client.py
