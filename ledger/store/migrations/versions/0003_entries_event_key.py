"""entries: look events up by a 64-bit event key instead of a unique index on the hex id

Revision ID: 0003
Revises: 0002

The unique index on (log_id, event_id) made each append pay a random insert into an index of
64-character keys (about 9 us per event on SQLite, most of it WAL pages written at commit).
Lookups by event id now use the non-unique (log_id, event_key) index, event_key being the id's
first 8 bytes as a signed integer (ledger.db.event_key). The id stays unique per log: it is the
hash of the event, whose run, producer and seq are unique by uq_entries_seq (docs/storage.md).
"""
import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def _key(event_id: str) -> int:
    return int.from_bytes(bytes.fromhex(event_id[:16]), "big", signed=True)


def upgrade() -> None:
    op.add_column("entries", sa.Column("event_key", sa.BigInteger(), nullable=True))
    conn = op.get_bind()
    entries = sa.table("entries", sa.column("log_id"), sa.column("idx"), sa.column("event_id"), sa.column("event_key"))
    last: tuple = ("", -1)
    while True:  # backfill page by page (memory does not grow with the log)
        rows = conn.execute(
            sa.select(entries.c.log_id, entries.c.idx, entries.c.event_id)
            .where(sa.tuple_(entries.c.log_id, entries.c.idx) > sa.tuple_(sa.literal(last[0]), sa.literal(last[1])))
            .order_by(entries.c.log_id, entries.c.idx)
            .limit(5000)
        ).all()
        if not rows:
            break
        conn.execute(
            entries.update()
            .where(entries.c.log_id == sa.bindparam("k_log"), entries.c.idx == sa.bindparam("k_idx"))
            .values(event_key=sa.bindparam("k_key")),
            [{"k_log": r.log_id, "k_idx": r.idx, "k_key": _key(r.event_id)} for r in rows],
        )
        last = (rows[-1].log_id, rows[-1].idx)
    with op.batch_alter_table("entries") as batch:  # SQLite: rebuilds the table
        batch.alter_column("event_key", existing_type=sa.BigInteger(), nullable=False)
        batch.drop_constraint("uq_entries_event", type_="unique")
    op.create_index("ix_entries_event_key", "entries", ["log_id", "event_key"])


def downgrade() -> None:
    op.drop_index("ix_entries_event_key", table_name="entries")
    with op.batch_alter_table("entries") as batch:
        batch.create_unique_constraint("uq_entries_event", ["log_id", "event_id"])
        batch.drop_column("event_key")
