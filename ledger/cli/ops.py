"""Operations commands: `rlhf-ledger migrate` (schema, for the Kubernetes migration Job and
init containers), `rlhf-ledger migrate-keys` (key events for producers registered before they
existed; docs/keys.md) and `rlhf-ledger recover` (re-append a lost tail; docs/operations.md)."""

from __future__ import annotations

import time
from pathlib import Path

import click

from rlhf_ledger.cli.common import CliError, _open_ledger, common


def _database_url(data_dir: str | None, database_url: str | None) -> str:
    """The URL the other commands would open (DATABASE_URL or DATABASE_URL_FILE, as in the
    Kubernetes pods; else SQLite in the data directory, which only then is touched)."""
    import os

    from rlhf_ledger.core.secret_env import env_secret
    from rlhf_ledger.store import db

    home = Path(data_dir or os.environ.get("RLHF_LEDGER_HOME", "./data"))
    url = db.database_url(home, database_url or env_secret("DATABASE_URL") or None)
    if url.startswith("sqlite"):
        db.secure_data_dir(home)
    return url


def _db_error(url: str, e: Exception) -> str:
    from rlhf_ledger.cli.preflight import hide_password

    first = str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__
    return f"cannot open the ledger database {hide_password(url)}: {first} (set DATABASE_URL or --database-url)"


@click.command("migrate")
@common
@click.option("--check", is_flag=True, help="change nothing: exit 0 if the schema is at the newest revision, else 1")
@click.option("--wait", default=0.0, show_default=True, type=click.FloatRange(min=0),
              help="with --check: keep checking up to this many seconds (init containers wait for the migration Job)")
def migrate_command(data_dir, database_url, check, wait) -> None:
    """Create or upgrade the database schema to the newest revision (idempotent)."""
    from rlhf_ledger.core.errors import LedgerError

    try:
        url = _database_url(data_dir, database_url)
    except (LedgerError, OSError) as e:  # an unreadable DATABASE_URL_FILE, an unwritable data directory
        raise CliError(str(e)) from None
    if not check:
        # The database only (no data directory, no keys): the Kubernetes Job has neither.
        from rlhf_ledger.store.migrate import schema_state, upgrade_database

        try:
            upgrade_database(url)
            current, head = schema_state(url)
        except Exception as e:  # unreachable server, bad URL: one line
            raise CliError(_db_error(url, e)) from None
        click.echo(f"schema at revision {current} (newest {head})")
        return
    from rlhf_ledger.store.migrate import schema_state

    deadline = time.monotonic() + wait
    while True:
        try:
            current, head = schema_state(url)
            why = None if current == head else (f"schema at revision {current or 'none'}, newest is {head} "
                                                "(run `rlhf-ledger migrate`)")
        except Exception as e:  # an unreachable database is "not yet" here
            why = _db_error(url, e)
        if why is None:
            click.echo(f"schema at the newest revision {head}")
            return
        if time.monotonic() >= deadline:
            raise CliError(why)
        time.sleep(min(2.0, max(0.1, deadline - time.monotonic())))


@click.command("recover")
@common
@click.option("--log", "log_id", required=True, help="the log refusing to sign")
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
def recover_command(data_dir, database_url, log_id, files) -> None:
    """Re-append a lost tail from the producers' signed events (JSON lines of {"event","sig"}).

    Nothing is appended unless the events, in the order found, reproduce the root of every
    published checkpoint and on-chain anchor the database is missing (docs/operations.md).
    """
    from rlhf_ledger.store.fork_guard import SigningRefused
    from rlhf_ledger.store.recover import read_envelopes, recover

    ledger = _open_ledger(data_dir, database_url)
    try:
        from rlhf_ledger.core.secret_env import env_secret  # the chain witness, when a chain is configured

        if env_secret("RLHF_CHAIN_RPC") and env_secret("RLHF_ANCHOR_CONTRACT"):
            from rlhf_ledger.anchoring.fork_witness import witness_from_env

            w = witness_from_env(ttl=0)
            if w is not None and ledger.fork_guard is not None:
                ledger.fork_guard.add_witness(w)
        if ledger.fork_check(log_id) is None:
            click.echo(f"log {log_id} is consistent with every published checkpoint; nothing to recover")
            return
        r = recover(ledger, log_id, read_envelopes(list(files)))
    except SigningRefused as e:
        raise CliError(str(e)) from None
    finally:
        ledger.close()
    click.echo(f"log {log_id}: re-appended {r.appended} events ({r.already_present} were present); size "
               f"{r.size_before} -> {r.size_after}, consistent with the published size {r.reference_size}; signing resumes")


@click.command("migrate-keys")
@common
@click.option("--log", "log_id", default=None, help="one log (default: every log)")
def migrate_keys_command(data_dir, database_url, log_id) -> None:
    """Record producers registered before key events existed as legacy key events (idempotent;
    docs/keys.md, "Migration of existing logs"). Needs the passphrase (the log key signs them)."""
    ledger = _open_ledger(data_dir, database_url)
    try:
        ids = [log_id] if log_id else [i.log_id for i in ledger.list_logs()]
        for lid in ids:
            n = ledger.migrate_keys(lid)
            click.echo(f"log {lid}: {n} key event(s) written" if n else f"log {lid}: every producer has its key events")
    finally:
        ledger.close()
