"""The ledger store: one gateway, `Ledger`, to every log in one database (docs/storage.md).

One database (SQLite file by default, PostgreSQL through DATABASE_URL) holds every log. Other
layers call typed methods of `Ledger` and of its repositories (`ledger.anchors`,
`ledger.tokens`, `ledger.lease(...)`), never an engine or a connection.

`Ledger` is the one facade callers use. It is composed of mixins, one module per concern, over a
shared base (store/base.py: the database, the keys directory, the fork guard, the log rows):

- store/keyring.py: the passphrase, the log keys, the payload key ring;
- store/reader.py: entries, proofs, checkpoints (read transactions, never the write lock);
- store/checkpointer.py: signing checkpoints, the fork guard's calls;
- store/openings.py: sealing and reading payloads (crypto: payloads.py; erasure: erasure.py);
- store/appender.py: append, append_stream, the log's own records (key events);
- store/audit.py: `audit()`.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from rlhf_ledger.core.checkpoints import default_origin
from rlhf_ledger.core.errors import ConflictError, EventError, LedgerError
from rlhf_ledger.core.keys import Signer, valid_origin, write_key_file
from rlhf_ledger.store import db, monitoring
from rlhf_ledger.store.anchors import AnchorStore
from rlhf_ledger.store.appender import MAX_BATCH, AppenderMixin, BatchRejected
from rlhf_ledger.store.audit import audit
from rlhf_ledger.store.fork_guard import ForkGuard, PublishedCheckpoints, default_published_dir
from rlhf_ledger.store.locks import Lease
from rlhf_ledger.store.migrate import upgrade
from rlhf_ledger.store.monitoring import LogLag
from rlhf_ledger.store.records import AppendResult, EntryRecord, EntrySpan, LogInfo, SealedPayload
from rlhf_ledger.store.tokens import TokenStore

if TYPE_CHECKING:
    from rlhf_ledger.store.erasure import Erasure

__all__ = ["MAX_BATCH", "AppendResult", "BatchRejected", "EntryRecord", "EntrySpan", "Ledger", "LogInfo", "SealedPayload",
           "audit"]


class Ledger(AppenderMixin):
    """Access to every log in one database. Thread-safe; one instance per process is enough."""

    def __init__(self, engine: Engine, keys_dir: Path, *, passphrase: str | None = None, read_engine: Engine | None = None,
                 replica_engine: Engine | None = None, fork_guard: ForkGuard | None = None):
        super().__init__(engine, keys_dir, passphrase=passphrase, read_engine=read_engine, replica_engine=replica_engine,
                         fork_guard=fork_guard)
        self.anchors = AnchorStore(self.database)  # anchoring records (store/anchors.py)
        self.tokens = TokenStore(self.database)  # the API's bearer tokens (store/tokens.py)

    # --- opening --------------------------------------------------------------------------

    @classmethod
    def open(
        cls,
        data_dir: Path | str | None = None,
        database_url: str | None = None,
        *,
        passphrase: str | None = None,
        migrate: bool = True,
        database_read_url: str | None = None,
    ) -> Ledger:
        """Open (and create or upgrade) the ledger. DATABASE_URL in the environment wins."""
        from rlhf_ledger.core.secret_env import env_secret  # NAME or NAME_FILE: URLs carry the database password

        database_url = database_url or env_secret("DATABASE_URL") or None
        database_read_url = database_read_url or env_secret("DATABASE_READ_URL") or None
        if data_dir is None:
            data_dir = os.environ.get("RLHF_LEDGER_HOME", "./data")
        data_dir = Path(data_dir)
        url = db.database_url(data_dir, database_url)
        db.secure_data_dir(data_dir, sqlite=url.startswith("sqlite"))
        engine = db.make_engine(url)
        if migrate:
            upgrade(engine)
        read_engine = db.make_engine(url, writer=False) if db.is_sqlite(engine) else None
        replica = None
        if database_read_url:
            if db.is_sqlite(engine):
                engine.dispose()
                raise LedgerError("DATABASE_READ_URL needs a PostgreSQL primary (DATABASE_URL); SQLite has no replicas",
                                  code="config_error")
            replica = db.make_engine(db.database_url(None, database_read_url), writer=False)
        guard = ForkGuard(PublishedCheckpoints(default_published_dir(data_dir)))
        return cls(engine, data_dir / "keys", passphrase=passphrase, read_engine=read_engine,
                   replica_engine=replica, fork_guard=guard)

    def lease(self, name: str, *, holder: str | None = None, ttl: float = 30.0) -> Lease:
        """A named lease in this database (store/locks.py): one holder at a time across processes."""
        return Lease(self.database, name, holder=holder, ttl=ttl)

    # --- logs -----------------------------------------------------------------------------

    def init_log(
        self,
        log_id: str,
        *,
        origin: str | None = None,
        checkpoint_every_events: int = 1000,
        checkpoint_every_seconds: float = 60.0,
    ) -> LogInfo:
        from rlhf_ledger.core.events import valid_id

        if not valid_id(log_id):
            raise EventError("log id must match [A-Za-z0-9][A-Za-z0-9._:/-]{0,127}", where="log_id")
        if origin is not None and not valid_origin(origin):
            raise EventError("origin must be 1 to 256 printable characters (no control characters) "
                             "and must not start with a space or an em dash", where="origin")
        if checkpoint_every_events < 1 or checkpoint_every_seconds <= 0:
            raise LedgerError("checkpoint intervals must be positive")
        origin = origin or default_origin(log_id)
        if origin == "rlhf-ledger.run-index/v1":  # the run-index note's tag (docs/run-index.md)
            raise LedgerError("this origin is reserved for run-index notes", where="origin")
        with self.database.write() as conn:
            if not self._sqlite:
                # Serialise concurrent creations of one log (SQLite's BEGIN IMMEDIATE already
                # does): the loser then sees the row and gets ConflictError, instead of finding
                # the winner's key file written and its row not yet committed.
                conn.execute(sa.text("SELECT pg_advisory_xact_lock(727275, hashtext(:k))"), {"k": log_id})
            if conn.execute(sa.select(db.logs.c.log_id).where(db.logs.c.log_id == log_id)).first():
                raise ConflictError("log already exists", where=log_id)
            path = self._log_key_path(log_id)
            signer = Signer.generate()
            if path.exists():  # left by a creation whose transaction failed (or a lost database): keep it aside
                path.rename(path.with_name(f"{path.name}.orphan-{int(time.time())}"))
            write_key_file(path, signer, self.key_passphrase(), label=f"log key for {origin}")
            conn.execute(
                db.logs.insert().values(
                    log_id=log_id,
                    origin=origin,
                    public_key=signer.public_key,
                    size=0,
                    checkpoint_every_events=checkpoint_every_events,
                    checkpoint_every_seconds=checkpoint_every_seconds,
                    created_at=time.time(),
                )
            )
        self._signers[log_id] = signer
        self.checkpoint(log_id)  # the signed empty tree: a starting point for consistency
        return self.log_info(log_id)

    def erase_run(self, log_id: str, run_id: str) -> Erasure:
        """Destroy a run's data key so that no copy stays readable, and record it in the log
        (an `erasure` event in the same transaction); see store/erasure.py, docs/storage.md."""
        from rlhf_ledger.store.erasure import erase_run

        return erase_run(self, log_id, run_id)

    def erase_subject(self, subject: str) -> Erasure:
        """Destroy a data subject's key (their openings in every run and log), recorded in each
        log that held them; see store/erasure.py, docs/storage.md."""
        from rlhf_ledger.store.erasure import erase_subject

        return erase_subject(self, subject)

    # --- gauges -----------------------------------------------------------------------------

    def log_lags(self) -> list[LogLag]:
        """Per log: size, newest checkpoint, largest settled anchor (one read, store/monitoring.py)."""
        return monitoring.log_lags(self.database)

    def oldest_unanchored(self) -> dict[str, float | None]:
        """Per log: when its oldest checkpoint not covered by a settled anchor was signed."""
        return monitoring.oldest_unanchored(self.database)
