"""run index: ended runs and per-run membership records (docs/run-index.md)

Revision ID: 0004
Revises: 0003

`ended_runs` holds the index of each run's run.end, so the appender refuses later events of
that run with one primary-key lookup. `run_records` holds, per run and per tree size at which
the run index was computed, the run's membership record (event count, Merkle root over the
run's leaves, each producer's last seq and event hash, ended) and the compact range needed to
extend it; `run_indexes` holds the signed run-index note per tree size. Existing logs are
backfilled for ended_runs; run records are computed on demand from entries.
"""
import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "ended_runs",
        sa.Column("log_id", sa.String(128), primary_key=True),
        sa.Column("run_id", sa.String(128), primary_key=True),
        sa.Column("end_idx", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "run_records",
        sa.Column("log_id", sa.String(128), primary_key=True),
        sa.Column("run_id", sa.String(128), primary_key=True),
        sa.Column("size", sa.BigInteger, primary_key=True),
        sa.Column("record", sa.Text, nullable=False),
        sa.Column("record_hash", sa.LargeBinary, nullable=False),
        sa.Column("frontier", sa.Text, nullable=False),
    )
    op.create_table(
        "run_indexes",
        sa.Column("log_id", sa.String(128), primary_key=True),
        sa.Column("size", sa.BigInteger, primary_key=True),
        sa.Column("count", sa.BigInteger, nullable=False),
        sa.Column("root", sa.LargeBinary, nullable=False),
        sa.Column("note", sa.Text, nullable=False),
    )
    # A log that already holds run.end events: record them (the first run.end of each run).
    conn = op.get_bind()
    entries = sa.table("entries", sa.column("log_id"), sa.column("run_id"), sa.column("idx"), sa.column("type"))
    rows = conn.execute(
        sa.select(entries.c.log_id, entries.c.run_id, sa.func.min(entries.c.idx))
        .where(entries.c.type == "run.end")
        .group_by(entries.c.log_id, entries.c.run_id)
    ).all()
    if rows:
        ended = sa.table("ended_runs", sa.column("log_id"), sa.column("run_id"), sa.column("end_idx"))
        conn.execute(ended.insert(), [{"log_id": r[0], "run_id": r[1], "end_idx": r[2]} for r in rows])


def downgrade() -> None:
    op.drop_table("run_indexes")
    op.drop_table("run_records")
    op.drop_table("ended_runs")
