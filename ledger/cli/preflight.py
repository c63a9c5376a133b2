"""Start-up checks of the long-running commands (`serve`, `anchor`): each missing or wrong
prerequisite becomes one line naming it and how to provide it, before any worker starts, so
no traceback reaches the operator (docs/operations.md, "Start-up errors")."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from rlhf_ledger.cli.common import CliError
from rlhf_ledger.core.keys import PASSPHRASE_ENV, decrypt_key
from rlhf_ledger.core.secret_env import env_secret


def hide_password(url: str) -> str:
    return re.sub(r"(://[^:/@]+):[^@]*@", r"\1:***@", url)


def require_passphrase(data_dir: Path) -> None:
    """The ledger passphrase is set and opens the key files already in `data_dir/keys`."""
    try:
        value = env_secret(PASSPHRASE_ENV)
    except Exception as e:  # an unreadable *_FILE
        raise CliError(str(e)) from None
    if not value:
        raise CliError(f"{PASSPHRASE_ENV} is not set: the ledger's keys are encrypted with it; set it, or "
                       f"{PASSPHRASE_ENV}_FILE to a file holding it (a mounted Secret)")
    keys = sorted(Path(data_dir, "keys").glob("log-*.key.json"))
    if keys:
        try:
            decrypt_key(json.loads(keys[0].read_text()), value, where=str(keys[0]))
        except Exception:  # wrong passphrase or damaged file: one line either way
            raise CliError(f"{PASSPHRASE_ENV} does not open {keys[0]} (wrong passphrase, or the file is damaged)") from None


def open_ledger(data_dir: str | None, database_url: str | None):
    """Ledger.open with one-line errors naming the database and how to set it."""
    from rlhf_ledger.core.errors import LedgerError
    from rlhf_ledger.store.ledger import Ledger

    try:
        return Ledger.open(data_dir, database_url)
    except LedgerError as e:
        raise CliError(str(e)) from None
    except Exception as e:  # unreachable server, bad URL, unwritable directory
        url = database_url or env_secret("DATABASE_URL") or f"sqlite in {data_dir or os.environ.get('RLHF_LEDGER_HOME', './data')}"
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CliError(f"cannot open the ledger database {hide_password(url)}: {first[:300]} "
                       "(set DATABASE_URL or --database-url; SQLite is used in the data directory without it)") from None
