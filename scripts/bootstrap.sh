#!/usr/bin/env bash
# Installs everything the demo and the tests need, idempotently:
# a virtual environment with the pinned Python packages, the project and the verifier
# in editable mode, and the pinned npm packages under contracts/ (solc-js and anvil).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
py="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  echo "[bootstrap] creating .venv" >&2
  "$py" -m venv .venv
fi
stamp=.venv/.requirements.sha256
want="$(cat requirements.lock pyproject.toml setup.py ledger/core/*.c verifier/pyproject.toml verifier/setup.py verifier/rlhf_verifier/*.c | sha256sum | cut -d' ' -f1)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "[bootstrap] installing pinned Python packages (requirements.lock)" >&2
  # torch==2.13.0+cpu is taken from the machine's local wheel directory (pip's find-links).
  .venv/bin/python -m pip install -q --disable-pip-version-check -r requirements.lock
  .venv/bin/python -m pip install -q --disable-pip-version-check --no-deps -e . -e ./verifier
  echo "$want" > "$stamp"
fi
if [ -f contracts/package-lock.json ]; then
  lockstamp=contracts/node_modules/.lock.sha256
  want_npm="$(sha256sum contracts/package-lock.json | cut -d' ' -f1)"
  if [ "$(cat "$lockstamp" 2>/dev/null)" != "$want_npm" ]; then
    echo "[bootstrap] npm ci in contracts/ (solc-js, anvil)" >&2
    (cd contracts && npm ci --no-audit --no-fund --loglevel=error)
    echo "$want_npm" > "$lockstamp"
  fi
fi
