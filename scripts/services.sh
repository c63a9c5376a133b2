#!/usr/bin/env bash
# Starts the machine services the tests use when they are installed but not running,
# and installs headless Chromium (Debian's package) for the HTML report test.
set -uo pipefail
if command -v pg_ctlcluster >/dev/null 2>&1 && ! pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null; then
  echo "[services] starting PostgreSQL" >&2
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start || true
fi
if ! command -v chromium >/dev/null 2>&1; then
  echo "[services] installing Debian chromium for the HTML report test" >&2
  if [ "$(id -u)" = 0 ]; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
      || echo "[services] could not install chromium; the browser test will fail" >&2
  fi
fi
exit 0
