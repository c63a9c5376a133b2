"""Pieces shared by the CLI modules: one-line errors, opening the ledger, common options."""

from __future__ import annotations

import click

DATA_DIR_HELP = "data directory (default: $RLHF_LEDGER_HOME or ./data)"


class CliError(click.ClickException):
    """One line on stderr, exit status 1."""

    def format_message(self) -> str:
        return self.message


def _open_ledger(data_dir: str | None, database_url: str | None):
    """Ledger.open with one-line errors naming the database and how to set it."""
    from rlhf_ledger.cli.preflight import open_ledger

    return open_ledger(data_dir, database_url)


def common(f):
    f = click.option("--database-url", envvar="DATABASE_URL", default=None, help="SQLAlchemy URL (PostgreSQL); default SQLite in the data dir")(f)
    f = click.option("--data-dir", envvar="RLHF_LEDGER_HOME", default=None, help=DATA_DIR_HELP)(f)
    return f


