#!/bin/sh
# Runs once, when the postgres container initialises an empty data directory (the official
# image runs /docker-entrypoint-initdb.d/*). Creates the service's own role: it can log in,
# owns the ledger schema (migrations create tables; VACUUM of its own tables), and is neither
# superuser nor allowed to create databases or roles. Its password comes from a Docker secret.
set -eu
pw="$(cat /run/secrets/ledger_db_password)"
[ -n "$pw" ] || { echo "ledger_db_password secret is empty" >&2; exit 1; }
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" -v pw="$pw" <<'SQL'
CREATE ROLE ledger_app LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION PASSWORD :'pw';
REVOKE ALL ON DATABASE ledger FROM PUBLIC;
GRANT CONNECT, TEMPORARY ON DATABASE ledger TO ledger_app;
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
ALTER SCHEMA public OWNER TO ledger_app;
SQL
