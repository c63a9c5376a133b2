"""producers: the log positions of each key's register and revoke key events

Revision ID: 0005
Revises: 0004

Producer registration and revocation are log entries since this revision (docs/keys.md,
"Producer keys are log entries"); `producers` stays the appender's cache of them, now with the
index of the key's `producer.register` event (`registered_idx`; -1 for a legacy registration)
and of its `producer.revoke` event (`revoked_idx`). Rows of existing logs keep NULL until
`rlhf-ledger migrate-keys` (or `serve` at start) writes their key events: that needs the log key,
which a schema migration does not have. Key events already in the log (a database downgraded
and upgraded again) fill the columns here, from the entries of the run `rlhf-ledger:keys`.
"""
import json

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("producers") as b:
        b.add_column(sa.Column("registered_idx", sa.BigInteger(), nullable=True))
        b.add_column(sa.Column("revoked_idx", sa.BigInteger(), nullable=True))
    conn = op.get_bind()
    entries = sa.table("entries", sa.column("log_id"), sa.column("idx"), sa.column("run_id"), sa.column("type"),
                       sa.column("entry"))
    producers = sa.table("producers", sa.column("log_id"), sa.column("key_id"), sa.column("registered_idx"),
                         sa.column("revoked_idx"))
    rows = conn.execute(sa.select(entries.c.log_id, entries.c.idx, entries.c.type, entries.c.entry)
                        .where(entries.c.run_id == "rlhf-ledger:keys").order_by(entries.c.log_id, entries.c.idx)).all()
    for log_id, idx, typ, entry in rows:
        body = json.loads(bytes(entry))["event"]["body"]
        if typ == "producer.register":
            values = {"registered_idx": -1 if body.get("legacy") is True else idx}
        elif typ == "producer.revoke":
            values = {"revoked_idx": idx}
        else:
            continue
        conn.execute(producers.update().where(producers.c.log_id == log_id, producers.c.key_id == body["key_id"])
                     .values(**values))


def downgrade() -> None:
    with op.batch_alter_table("producers") as b:
        b.drop_column("revoked_idx")
        b.drop_column("registered_idx")
