"""Database schema (SQLAlchemy Core) and engine set-up for SQLite (default) and PostgreSQL.

The schema is created and upgraded only by Alembic migrations (ledger/migrations); these table
objects describe it for queries. See docs/storage.md.
"""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Engine

metadata = sa.MetaData()

logs = sa.Table(
    "logs",
    metadata,
    sa.Column("log_id", sa.String(128), primary_key=True),
    sa.Column("origin", sa.String(256), nullable=False),
    sa.Column("public_key", sa.LargeBinary, nullable=False),
    sa.Column("size", sa.BigInteger, nullable=False),
    sa.Column("checkpoint_every_events", sa.Integer, nullable=False),
    sa.Column("checkpoint_every_seconds", sa.Float, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
)

producers = sa.Table(
    "producers",
    metadata,
    sa.Column("log_id", sa.String(128), primary_key=True),
    sa.Column("key_id", sa.String(64), primary_key=True),
    sa.Column("public_key", sa.LargeBinary, nullable=False),
    sa.Column("label", sa.String(256), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),  # active | revoked
    sa.Column("registered_at", sa.Float, nullable=False),
    sa.Column("revoked_at", sa.Float),
    # Log positions of the key's producer.register / producer.revoke key events (docs/keys.md);
    # registered_idx -1: a legacy registration; NULL: not migrated yet (rlhf-ledger migrate-keys).
    sa.Column("registered_idx", sa.BigInteger),
    sa.Column("revoked_idx", sa.BigInteger),
)

entries = sa.Table(
    "entries",
    metadata,
    sa.Column("log_id", sa.String(128), primary_key=True),
    sa.Column("idx", sa.BigInteger, primary_key=True),
    sa.Column("event_id", sa.String(64), nullable=False),
    sa.Column("leaf_hash", sa.LargeBinary, nullable=False),
    sa.Column("entry", sa.LargeBinary, nullable=False),
    sa.Column("run_id", sa.String(128), nullable=False),
    sa.Column("producer", sa.String(64), nullable=False),
    sa.Column("seq", sa.BigInteger, nullable=False),
    sa.Column("type", sa.String(64), nullable=False),
    sa.Column("ts", sa.String(32), nullable=False),
    sa.Column("appended_at", sa.Float, nullable=False),
    # The event id's first 8 bytes as a signed 64-bit integer (event_key()): a small index key
    # for lookups by event id. A unique index on the 64-hex id itself cost about 9 us per append
    # (random inserts dirty an index page per row, each written to the WAL); uniqueness of the id
    # follows from uq_entries_seq, since the id hashes the event's run, producer and seq.
    sa.Column("event_key", sa.BigInteger, nullable=False),
    sa.UniqueConstraint("log_id", "run_id", "producer", "seq", name="uq_entries_seq"),
)
sa.Index("ix_entries_event_key", entries.c.log_id, entries.c.event_key)


def event_key(event_id: str) -> int:
    """entries.event_key of a 64-hex event id; ValueError if it is not one."""
    if len(event_id) != 64:
        raise ValueError("an event id is 64 hex digits")
    return int.from_bytes(bytes.fromhex(event_id[:16]), "big", signed=True)


nodes = sa.Table(
    "nodes",
    metadata,
    sa.Column("log_id", sa.String(128), primary_key=True),
    sa.Column("level", sa.Integer, primary_key=True),
    sa.Column("idx", sa.BigInteger, primary_key=True),
    sa.Column("hash", sa.LargeBinary, nullable=False),
)

heads = sa.Table(
    "heads",
    metadata,
    sa.Column("log_id", sa.String(128), primary_key=True),
    sa.Column("run_id", sa.String(128), primary_key=True),
    sa.Column("producer", sa.String(64), primary_key=True),
    sa.Column("seq", sa.BigInteger, nullable=False),
    sa.Column("event_hash", sa.String(64), nullable=False),
)

checkpoints = sa.Table(
    "checkpoints",
    metadata,
    sa.Column("log_id", sa.String(128), primary_key=True),
    sa.Column("size", sa.BigInteger, primary_key=True),
    sa.Column("root", sa.LargeBinary, nullable=False),
    sa.Column("note", sa.Text, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
)

run_keys = sa.Table(
    "run_keys",
    metadata,
    sa.Column("log_id", sa.String(128), primary_key=True),
    sa.Column("run_id", sa.String(128), primary_key=True),
    sa.Column("wrapped_key", sa.LargeBinary),  # NULL once erased
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("erased_at", sa.Float),
)

payloads = sa.Table(
    "payloads",
    metadata,
    sa.Column("log_id", sa.String(128), primary_key=True),
    sa.Column("idx", sa.BigInteger, primary_key=True),
    sa.Column("run_id", sa.String(128), nullable=False),
    sa.Column("nonce", sa.LargeBinary, nullable=False),
    sa.Column("ciphertext", sa.LargeBinary, nullable=False),
    # JSON list of the body members with an opening (the v2 sealed document, storage.md);
    # NULL in rows written before subject keys (v1: JCS of the openings under the run key).
    sa.Column("members", sa.Text),
)

# Per-data-subject keys (storage.md "Payloads and erasure"): one per pseudonym for the whole
# database, wrapped under the KEK; NULL once erased.
subject_keys = sa.Table(
    "subject_keys",
    metadata,
    sa.Column("subject", sa.String(68), primary_key=True),
    sa.Column("wrapped_key", sa.LargeBinary),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("erased_at", sa.Float),
)

# Which stored opening names which subject: erase-subject finds a person's data without decrypting.
subject_openings = sa.Table(
    "subject_openings",
    metadata,
    sa.Column("subject", sa.String(68), primary_key=True),
    sa.Column("log_id", sa.String(128), primary_key=True),
    sa.Column("idx", sa.BigInteger, primary_key=True),
    sa.Column("member", sa.Text, primary_key=True),
    sa.Column("run_id", sa.String(128), nullable=False),
)

# The log's `erasure` events (run rlhf-ledger:erasures), cached: kind "run" or "subject".
erasures = sa.Table(
    "erasures",
    metadata,
    sa.Column("log_id", sa.String(128), primary_key=True),
    sa.Column("idx", sa.BigInteger, primary_key=True),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("target", sa.String(128), nullable=False),
    sa.Column("erased_at", sa.Float, nullable=False),
)
sa.Index("ix_erasures_target", erasures.c.kind, erasures.c.target)

ended_runs = sa.Table(
    "ended_runs",
    metadata,
    sa.Column("log_id", sa.String(128), primary_key=True),
    sa.Column("run_id", sa.String(128), primary_key=True),
    sa.Column("end_idx", sa.BigInteger, nullable=False),  # index of the run's run.end
)

# Run index (docs/run-index.md): each run's membership record as of a tree size.
run_records = sa.Table(
    "run_records",
    metadata,
    sa.Column("log_id", sa.String(128), primary_key=True),
    sa.Column("run_id", sa.String(128), primary_key=True),
    sa.Column("size", sa.BigInteger, primary_key=True),
    sa.Column("record", sa.Text, nullable=False),  # JCS of the record (what is hashed)
    sa.Column("record_hash", sa.LargeBinary, nullable=False),
    sa.Column("frontier", sa.Text, nullable=False),  # compact range of the run's leaves (JSON)
)

run_indexes = sa.Table(
    "run_indexes",
    metadata,
    sa.Column("log_id", sa.String(128), primary_key=True),
    sa.Column("size", sa.BigInteger, primary_key=True),
    sa.Column("count", sa.BigInteger, nullable=False),
    sa.Column("root", sa.LargeBinary, nullable=False),
    sa.Column("note", sa.Text, nullable=False),  # the signed run-index note
)

anchors = sa.Table(
    "anchors",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("log_id", sa.String(128), nullable=False),
    sa.Column("checkpoint_size", sa.BigInteger, nullable=False),
    sa.Column("prev_size", sa.BigInteger, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("cid", sa.String(128)),
    sa.Column("chain_id", sa.BigInteger),
    sa.Column("contract", sa.String(42)),
    sa.Column("tx_hash", sa.String(66)),
    sa.Column("nonce", sa.BigInteger),
    sa.Column("block_number", sa.BigInteger),
    sa.Column("block_hash", sa.String(66)),
    sa.Column("block_timestamp", sa.BigInteger),
    sa.Column("log_index", sa.Integer),
    sa.Column("gas_used", sa.BigInteger),
    sa.Column("evidence", sa.Text),
    sa.Column("error", sa.Text),
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
)
sa.Index("ix_anchors_log_size", anchors.c.log_id, anchors.c.checkpoint_size)

locks = sa.Table(
    "locks",
    metadata,
    sa.Column("name", sa.String(128), primary_key=True),
    sa.Column("holder", sa.String(128), nullable=False),
    sa.Column("expires_at", sa.Float, nullable=False),
)


def secure_data_dir(data_dir: Path | str, *, sqlite: bool = True) -> None:
    """Data files are the operator's alone: the directory (and its keys/) 0700, the SQLite
    database and its -wal/-shm files 0600. The database file is created here with 0600 before
    SQLite opens it, because SQLite gives the WAL and shm files the database file's mode."""
    import os

    d = Path(data_dir)
    d.mkdir(parents=True, exist_ok=True)
    os.chmod(d, 0o700)
    keys = d / "keys"
    if keys.is_dir():
        os.chmod(keys, 0o700)
    db_file = d / "ledger.sqlite3"
    if sqlite and not db_file.exists():
        os.close(os.open(db_file, os.O_WRONLY | os.O_CREAT, 0o600))
    for f in (db_file, d / "ledger.sqlite3-wal", d / "ledger.sqlite3-shm"):
        if f.exists():
            os.chmod(f, 0o600)


def database_url(data_dir: Path | str | None, url: str | None = None) -> str:
    """DATABASE_URL wins; otherwise a SQLite file under the data directory."""
    if url:
        if url.startswith("postgresql://") or url.startswith("postgres://"):
            url = "postgresql+psycopg://" + url.split("://", 1)[1]
        return url
    if data_dir is None:
        raise ValueError("either a data directory or a database URL is needed")
    path = Path(data_dir) / "ledger.sqlite3"
    return f"sqlite:///{path}"


def make_engine(url: str, *, writer: bool = True) -> Engine:
    """An engine; for SQLite, `writer` engines take the write lock at BEGIN (BEGIN IMMEDIATE)."""
    if url.startswith("sqlite"):
        engine = sa.create_engine(url, connect_args={"timeout": 60, "isolation_level": None}, poolclass=sa.pool.QueuePool)

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record):
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            # FULL: a commit is on disk (WAL fsync) before it returns, so an acknowledged append
            # survives power loss, not only a process crash.
            cur.execute("PRAGMA synchronous=FULL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=60000")
            # Freed cells and pages are zeroed, so an erased run key leaves no bytes behind in
            # the database file (docs/storage.md "Payloads and erasure").
            cur.execute("PRAGMA secure_delete=ON")
            cur.close()

        @event.listens_for(engine, "begin")
        def _sqlite_begin(conn):
            # Writers take the write lock at BEGIN: concurrent appenders queue here instead of
            # failing later with SQLITE_BUSY on lock upgrade. Readers take a WAL snapshot.
            conn.exec_driver_sql("BEGIN IMMEDIATE" if writer else "BEGIN")

        return engine
    return sa.create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=5)


def is_sqlite(engine: Engine) -> bool:
    return engine.dialect.name == "sqlite"
