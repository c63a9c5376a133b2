"""per-subject data keys, the subjects of stored openings, and the log's erasure records

Revision ID: 0006
Revises: 0005

Openings that name data subjects (event-format.md, `subjects`) are sealed under a key per
subject inside the run key's layer (storage.md, "Payloads and erasure"). `subject_keys` holds
those keys wrapped under the KEK (NULL once erased); `subject_openings` says which stored
opening names which subject, so `erase-subject` finds a person's data in every log without
decrypting anything; `erasures` caches the log's `erasure` events (run `rlhf-ledger:erasures`).
`payloads.members` lists the body members an entry has openings for; rows written before this
revision keep NULL (their sealed document is the v1 one, storage.md).
"""
import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "subject_keys",
        sa.Column("subject", sa.String(68), primary_key=True),
        sa.Column("wrapped_key", sa.LargeBinary, nullable=True),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("erased_at", sa.Float, nullable=True),
    )
    op.create_table(
        "subject_openings",
        sa.Column("subject", sa.String(68), primary_key=True),
        sa.Column("log_id", sa.String(128), primary_key=True),
        sa.Column("idx", sa.BigInteger, primary_key=True),
        sa.Column("member", sa.Text, primary_key=True),
        sa.Column("run_id", sa.String(128), nullable=False),
    )
    op.create_table(
        "erasures",
        sa.Column("log_id", sa.String(128), primary_key=True),
        sa.Column("idx", sa.BigInteger, primary_key=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("target", sa.String(128), nullable=False),
        sa.Column("erased_at", sa.Float, nullable=False),
    )
    op.create_index("ix_erasures_target", "erasures", ["kind", "target"])
    with op.batch_alter_table("payloads") as b:
        b.add_column(sa.Column("members", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("payloads") as b:
        b.drop_column("members")
    op.drop_index("ix_erasures_target", table_name="erasures")
    op.drop_table("erasures")
    op.drop_table("subject_openings")
    op.drop_table("subject_keys")
