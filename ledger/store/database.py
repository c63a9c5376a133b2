"""The engines of one ledger database and the one place where transactions are opened.

- `write()`: a transaction on the writer engine. On SQLite it begins with `BEGIN IMMEDIATE`
  and so holds the database's write lock until it ends: only writes go here.
- `read(fn)` / `rows(q)`: a read-only transaction on the reader engine, always rolled back.
  On SQLite the reader engine begins with a plain `BEGIN` (a WAL snapshot) and never waits for
  a writer; on PostgreSQL it is the primary's engine. With `replica=True` a streaming replica
  (DATABASE_READ_URL) is asked first, for reads whose answer from a replica is the primary's
  answer or absent (entries, nodes, checkpoints: replica.py explains why), and what it lacks is
  asked of the primary in the same call.

Everything outside the store calls typed methods of the gateway (`Ledger`, `ledger.anchors`,
`ledger.tokens`, ...), never an engine (docs/storage.md, "One gateway").
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from rlhf_ledger.core.errors import NotFoundError, ProofError
from rlhf_ledger.store import db

T = TypeVar("T")

# Errors of the database itself, for layers that map them (the API answers 503) without
# importing SQLAlchemy: UNAVAILABLE is "the database did not answer or gave up on a lock".
DatabaseError = sa.exc.SQLAlchemyError
UNAVAILABLE: tuple[type[Exception], ...] = (sa.exc.OperationalError, sa.exc.InterfaceError)


class Database:
    """Writer, reader and (optional) replica engines of one database."""

    def __init__(self, engine: Engine, read_engine: Engine | None = None, replica_engine: Engine | None = None):
        self.writer = engine
        # SQLite: a second engine whose transactions are plain deferred ones (WAL snapshots);
        # PostgreSQL: the writer engine itself (its reads never block on writers).
        self.reader = read_engine or engine
        self.replica = replica_engine
        self.sqlite = db.is_sqlite(engine)
        self.replica_fallbacks = 0  # replica reads not replayed yet, answered by the primary
        self._replica_down_until = 0.0

    def dispose(self) -> None:
        self.writer.dispose()
        if self.reader is not self.writer:
            self.reader.dispose()
        if self.replica is not None:
            self.replica.dispose()

    # --- writes -------------------------------------------------------------------------------

    @contextmanager
    def write(self) -> Iterator[Connection]:
        """A transaction holding the write lock (SQLite) that commits when the block ends."""
        with self.writer.begin() as conn:
            yield conn

    # --- reads --------------------------------------------------------------------------------

    @staticmethod
    def _snapshot(engine: Engine, fn: Callable[[Connection], T]) -> T:
        # The read-then-rollback idiom, once: a read transaction writes nothing, and ending it
        # with a rollback releases its snapshot at once (also when fn raises).
        with engine.connect() as conn:
            try:
                return fn(conn)
            finally:
                conn.rollback()

    def read(self, fn: Callable[[Connection], T], *, replica: bool = False) -> T:
        """fn(conn) in a read transaction. `replica`: ask the replica first; a NotFoundError or
        ProofError there (a row or size it has not replayed) is asked of the primary."""
        if replica and (eng := self._replica_up()) is not None:
            try:
                return self._snapshot(eng, fn)
            except (NotFoundError, ProofError):
                # The replica's snapshot is a prefix of the primary's history: a size or row it
                # has not replayed yet is answered by the primary, never approximated.
                self.replica_fallbacks += 1
            except sa.exc.DBAPIError:
                self._replica_failed()
        return self._snapshot(self.reader, fn)

    def rows(self, q: Any, *, replica: bool = False) -> Sequence[sa.Row]:
        """The rows of one statement. `replica`: rows the replica has are its answer; none is
        "not replayed yet" (or absent), and the primary decides."""
        if replica and (eng := self._replica_up()) is not None:
            try:
                found = self._snapshot(eng, lambda conn: conn.execute(q).all())
            except sa.exc.DBAPIError:
                self._replica_failed()
            else:
                if found:
                    return found
                self.replica_fallbacks += 1
        return self._snapshot(self.reader, lambda conn: conn.execute(q).all())

    def read_replica(self, fn: Callable[[Connection], T]) -> T:
        """fn(conn) in a read transaction on the replica itself, no fallback (its status)."""
        assert self.replica is not None
        return self._snapshot(self.replica, fn)

    def ping(self) -> None:
        """One trivial query on the primary (raises if the database does not answer)."""
        self._snapshot(self.reader, lambda conn: conn.execute(sa.select(sa.func.count()).select_from(db.logs)).scalar())

    def _replica_up(self) -> Engine | None:
        """The read replica, unless it failed within the last few seconds (then: the primary)."""
        if self.replica is None or time.monotonic() < self._replica_down_until:
            return None
        return self.replica

    def _replica_failed(self) -> None:
        self.replica_fallbacks += 1
        self._replica_down_until = time.monotonic() + 5.0  # no connect timeout per request meanwhile


def insert_many(conn: Connection, table: sa.Table, cols: tuple[str, ...], rows: list[tuple]) -> None:
    """The driver's executemany directly: SQLAlchemy's per-row parameter processing costs more
    than the inserts themselves on the append path."""
    if not rows:
        return
    mark = "?" if conn.dialect.paramstyle == "qmark" else "%s"
    sql = f"INSERT INTO {table.name} ({', '.join(cols)}) VALUES ({', '.join([mark] * len(cols))})"
    conn.exec_driver_sql(sql, rows)
