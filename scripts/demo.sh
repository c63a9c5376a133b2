#!/usr/bin/env bash
# The README's demo command: a small real RLHF run on the CPU, recorded, anchored on a local
# anvil chain, exported as a proof bundle and verified.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bash scripts/bootstrap.sh
export PATH="$root/.venv/bin:$PATH"
exec .venv/bin/python -m rlhf_ledger.demo "$@"
