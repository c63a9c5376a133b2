"""What every part of the `Ledger` gateway shares: the database (store/database.py), the keys
directory, the fork guard, and the log rows (`log_info`, the log's write lock).

The `Ledger` class (store/ledger.py) is composed of mixins over this base, one module per
concern (docs/storage.md, "Code layout"): keyring, reader, checkpointer, openings, appender.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from rlhf_ledger.core.errors import NotFoundError
from rlhf_ledger.store import db
from rlhf_ledger.store.database import Database
from rlhf_ledger.store.records import LogInfo

if TYPE_CHECKING:
    from rlhf_ledger.core.keys import Signer
    from rlhf_ledger.store.fork_guard import ForkGuard
    from rlhf_ledger.store.payloads import PayloadCrypto


class LedgerBase:
    """Access to every log in one database. Thread-safe; one instance per process is enough."""

    def __init__(self, engine: Engine, keys_dir: Path, *, passphrase: str | None = None, read_engine: Engine | None = None,
                 replica_engine: Engine | None = None, fork_guard: ForkGuard | None = None):
        # DATABASE_READ_URL: `replica_engine` is a streaming replica for reads (store/replica.py
        # explains why a lagging replica never yields a wrong answer); None = the primary.
        self.database = Database(engine, read_engine, replica_engine)
        self.fork_guard = fork_guard  # store/fork_guard.py; None only for bare test ledgers
        self.recovering = False  # set by `rlhf-ledger recover`: appends to a refused log allowed
        self.keys_dir = Path(keys_dir)
        self._passphrase = passphrase
        self._signers: dict[str, Signer] = {}
        self._crypto: PayloadCrypto | None = None
        self._sqlite = self.database.sqlite
        self.erase_wait_seconds = 30.0  # how long an erasure waits for readers of old row versions

    # The engines, for tests and benchmarks that inspect or damage the database on purpose.
    # The product's other layers never use them: they call the gateway's methods.
    @property
    def engine(self) -> Engine:
        return self.database.writer

    @property
    def read_engine(self) -> Engine:
        return self.database.reader

    @property
    def replica_engine(self) -> Engine | None:
        return self.database.replica

    @property
    def has_replica(self) -> bool:
        """Whether reads of the log go to a streaming replica first (DATABASE_READ_URL)."""
        return self.database.replica is not None

    @property
    def replica_fallbacks(self) -> int:
        """Replica reads that the primary answered (not replayed yet, or the replica was down)."""
        return self.database.replica_fallbacks

    def close(self) -> None:
        self.database.dispose()

    def ping(self) -> None:
        """Raise if the database does not answer (readiness checks)."""
        self.database.ping()

    # --- logs -----------------------------------------------------------------------------

    def log_info(self, log_id: str, conn: Connection | None = None) -> LogInfo:
        q = sa.select(db.logs).where(db.logs.c.log_id == log_id)
        rows = conn.execute(q).all() if conn is not None else self.database.rows(q, replica=True)
        row = rows[0] if rows else None
        if row is None:
            raise NotFoundError("no such log", where=f"log {log_id!r}")
        return LogInfo(row.log_id, row.origin, row.public_key, row.size, row.checkpoint_every_events, row.checkpoint_every_seconds)

    def log_ids(self) -> list[str]:
        """Every log's id, in order (one query on the primary)."""
        return [r.log_id for r in self.database.rows(sa.select(db.logs.c.log_id).order_by(db.logs.c.log_id))]

    def list_logs(self) -> list[LogInfo]:
        return [self.log_info(r.log_id) for r in self.database.rows(sa.select(db.logs.c.log_id).order_by(db.logs.c.log_id),
                                                                    replica=True)]

    def _lock_log(self, conn: Connection, log_id: str) -> sa.Row:
        """The log's row inside a write transaction, holding the log's write lock (SQLite: the
        transaction's BEGIN IMMEDIATE; PostgreSQL: SELECT ... FOR UPDATE)."""
        q = sa.select(db.logs).where(db.logs.c.log_id == log_id)
        if not self._sqlite:
            q = q.with_for_update()
        row = conn.execute(q).first()
        if row is None:
            raise NotFoundError("no such log", where=f"log {log_id!r}")
        return row
