"""Click group `api_group` (attach to the main CLI): `serve` and `token create|list|revoke`."""

from __future__ import annotations

import json
import os
from pathlib import Path

import click

from rlhf_ledger.core.roles import TOKEN_ROLES


@click.group("api", help="The ledger HTTP service.")
def api_group() -> None:
    pass


def _env(data_dir: str | None, database_url: str | None) -> None:
    if data_dir:
        os.environ["RLHF_LEDGER_HOME"] = data_dir
    if database_url:
        os.environ["DATABASE_URL"] = database_url


@api_group.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8080, show_default=True, type=int)
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1, 64))
@click.option("--data-dir", envvar="RLHF_LEDGER_HOME", default=None, help="data directory (default ./data)")
@click.option("--database-url", envvar="DATABASE_URL", default=None, help="PostgreSQL URL (default: SQLite in the data dir)")
@click.option("--log-level", default="info", show_default=True)
@click.option("--header-timeout", envvar="RLHF_API_HEADER_TIMEOUT", default=10.0, show_default=True, type=click.FloatRange(0),
              help="seconds a connection has to deliver a complete request head (0: off)")
@click.option("--keep-alive", envvar="RLHF_API_KEEP_ALIVE", default=5, show_default=True, type=click.IntRange(1, 3600),
              help="seconds an idle keep-alive connection stays open")
@click.option("--limit-concurrency", envvar="RLHF_API_LIMIT_CONCURRENCY", default=256, show_default=True, type=click.IntRange(1),
              help="connections plus requests in progress per worker beyond which requests get 503")
@click.option("--max-connections", envvar="RLHF_API_MAX_CONNECTIONS", default=1024, show_default=True, type=click.IntRange(1),
              help="open connections per worker beyond which new ones are closed at once")
@click.option("--backlog", default=512, show_default=True, type=click.IntRange(1))
def serve(host: str, port: int, workers: int, data_dir: str | None, database_url: str | None, log_level: str,
          header_timeout: float, keep_alive: int, limit_concurrency: int, max_connections: int, backlog: int) -> None:
    """Run the service with uvicorn (settings: docs/api.md; behind a proxy: docs/security.md)."""
    import uvicorn

    from rlhf_ledger.cli.preflight import open_ledger, require_passphrase

    _env(data_dir, database_url)
    # Everything the workers need, checked here as one-line errors (no traceback from a worker):
    # the passphrase opens the keys, the database answers; migrate once before the workers start.
    require_passphrase(Path(data_dir or os.environ.get("RLHF_LEDGER_HOME", "./data")))
    ledger = open_ledger(data_dir, database_url)
    try:  # the audit log and the service key's registration (a key event: it needs the log key)
        from rlhf_ledger.api.audit import ensure_audit_log
        from rlhf_ledger.api.config import Settings

        ensure_audit_log(ledger, Settings.from_env().audit_log_id)
    finally:
        ledger.close()
    # Worker processes read these when they import the protocol class.
    os.environ["RLHF_API_HEADER_TIMEOUT"] = str(header_timeout)
    os.environ["RLHF_API_MAX_CONNECTIONS"] = str(max_connections)
    from rlhf_ledger.api.protocol import GuardedH11Protocol

    GuardedH11Protocol.header_timeout, GuardedH11Protocol.max_connections = header_timeout, max_connections
    uvicorn.run("rlhf_ledger.api.app:create_app", factory=True, host=host, port=port, workers=workers, log_level=log_level,
                timeout_graceful_shutdown=10, proxy_headers=False, http=GuardedH11Protocol, timeout_keep_alive=keep_alive,
                limit_concurrency=limit_concurrency, backlog=backlog)


@api_group.group("token", help="Bearer tokens (admin, submitter, auditor).")
def token_group() -> None:
    pass


@token_group.command("create")
@click.option("--role", type=click.Choice([str(r) for r in TOKEN_ROLES]), required=True)
@click.option("--label", default="")
@click.option("--log", "log_ids", multiple=True, help="log id the token is bound to (repeatable)")
@click.option("--producer", "producer_key_ids", multiple=True, help="producer key id (submitter; repeatable)")
@click.option("--run", "run_ids", multiple=True, help="run id (auditor; repeatable)")
@click.option("--data-dir", envvar="RLHF_LEDGER_HOME", default=None)
@click.option("--database-url", envvar="DATABASE_URL", default=None)
def token_create(role, label, log_ids, producer_key_ids, run_ids, data_dir, database_url) -> None:
    """Mint a token and print it once (only its SHA-256 is stored)."""
    from rlhf_ledger.api.tokens import create_token
    from rlhf_ledger.cli.preflight import open_ledger
    from rlhf_ledger.core.errors import LedgerError

    ledger = open_ledger(data_dir, database_url)
    try:
        text, p = create_token(ledger.tokens, role, label=label, log_ids=list(log_ids),
                               producer_key_ids=list(producer_key_ids), run_ids=list(run_ids))
    except LedgerError as e:
        raise click.ClickException(str(e)) from None
    finally:
        ledger.close()
    click.echo(text)
    click.echo(f"token id {p.token_id} ({role}); store the token now, it is not shown again", err=True)


@token_group.command("list")
@click.option("--data-dir", envvar="RLHF_LEDGER_HOME", default=None)
@click.option("--database-url", envvar="DATABASE_URL", default=None)
def token_list(data_dir, database_url) -> None:
    from rlhf_ledger.api.tokens import list_tokens
    from rlhf_ledger.cli.preflight import open_ledger

    ledger = open_ledger(data_dir, database_url)
    try:
        for t in list_tokens(ledger.tokens):
            click.echo(json.dumps(t, sort_keys=True))
    finally:
        ledger.close()


@token_group.command("revoke")
@click.argument("token_id")
@click.option("--data-dir", envvar="RLHF_LEDGER_HOME", default=None)
@click.option("--database-url", envvar="DATABASE_URL", default=None)
def token_revoke(token_id, data_dir, database_url) -> None:
    from rlhf_ledger.api.tokens import revoke_token
    from rlhf_ledger.cli.preflight import open_ledger
    from rlhf_ledger.core.errors import LedgerError

    ledger = open_ledger(data_dir, database_url)
    try:
        revoke_token(ledger.tokens, token_id)
    except LedgerError as e:
        raise click.ClickException(str(e)) from None
    finally:
        ledger.close()
    click.echo(f"revoked {token_id}")


# Names the main CLI (ledger/cli.py) attaches as `rlhf-ledger serve` and `rlhf-ledger token`.
serve_command = serve
token_command = token_group


def main() -> None:  # `python -m api.cli ...` until the main CLI attaches the group
    api_group()


if __name__ == "__main__":
    main()
