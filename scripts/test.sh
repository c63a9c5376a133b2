#!/usr/bin/env bash
# The README's test command: installs what the tests need, then runs the whole suite.
# PostgreSQL is expected at 127.0.0.1:5432 (started here if it is installed but stopped);
# anvil is started by the tests themselves on a free loopback port.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bash scripts/bootstrap.sh
bash scripts/services.sh
export PATH="$root/.venv/bin:$PATH"
exec .venv/bin/python -m pytest "$@"
