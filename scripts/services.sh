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
# tests/api/security/test_erasure.py reads PostgreSQL pages with the pageinspect extension
# (Debian's postgresql-contrib in older releases; part of the server package since 10).
if command -v psql >/dev/null 2>&1 && [ "$(id -u)" = 0 ] \
   && ! psql -h 127.0.0.1 -U postgres -Atc "select 1 from pg_available_extensions where name='pageinspect'" 2>/dev/null | grep -q 1; then
  echo "[services] installing postgresql-contrib (pageinspect) for the erasure test" >&2
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql-contrib >/dev/null) \
    || echo "[services] could not install postgresql-contrib; the PostgreSQL erasure test will fail" >&2
fi
# tests/deploy: promtool and prometheus (Debian's package) check and run the alert rules.
if ! command -v promtool >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  echo "[services] installing Debian prometheus (promtool) for tests/deploy" >&2
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus >/dev/null) \
    || echo "[services] could not install prometheus; tests/deploy alert tests will fail" >&2
fi
# tests/deploy: checkov lints the rendered Kubernetes manifests, from its own virtualenv
# (its pins conflict with requirements.lock; deploy/lint-requirements.lock).
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
want="$(sha256sum "$root/deploy/lint-requirements.lock" | cut -d' ' -f1)"
if [ "$(cat "$root/.venv-lint/.lock.sha256" 2>/dev/null)" != "$want" ]; then
  echo "[services] installing checkov into .venv-lint (deploy/lint-requirements.lock)" >&2
  (python3 -m venv "$root/.venv-lint" && "$root/.venv-lint/bin/pip" install -q --disable-pip-version-check \
     -r "$root/deploy/lint-requirements.lock" && echo "$want" > "$root/.venv-lint/.lock.sha256") \
    || echo "[services] could not install checkov; tests/deploy manifest lint will fail" >&2
fi
exit 0
