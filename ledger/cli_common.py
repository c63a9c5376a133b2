"""Pieces shared by the CLI modules: one-line errors, opening the ledger, common options."""

from __future__ import annotations

import click

from .errors import LedgerError

DATA_DIR_HELP = "data directory (default: $RLHF_LEDGER_HOME or ./data)"


class CliError(click.ClickException):
    """One line on stderr, exit status 1."""

    def format_message(self) -> str:
        return self.message


def _open_ledger(data_dir: str | None, database_url: str | None):
    from .store import Ledger

    try:
        return Ledger.open(data_dir, database_url)
    except LedgerError as e:
        raise CliError(str(e)) from None
    except Exception as e:  # a database that cannot be reached or opened
        raise CliError(f"cannot open the ledger database: {type(e).__name__}: {str(e).splitlines()[0]}") from None


def common(f):
    f = click.option("--database-url", envvar="DATABASE_URL", default=None, help="SQLAlchemy URL (PostgreSQL); default SQLite in the data dir")(f)
    f = click.option("--data-dir", envvar="RLHF_LEDGER_HOME", default=None, help=DATA_DIR_HELP)(f)
    return f


