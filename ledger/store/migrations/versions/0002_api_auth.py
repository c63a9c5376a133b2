"""api auth: bearer tokens (stored as SHA-256 hashes) for the ledger service

Revision ID: 0002
Revises: 0001

Denials are not stored here: they are appended as signed events to the `audit` log (docs/api.md).
The table objects used for queries live in api/schema.py (own MetaData, created only here).
"""
import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "api_tokens",
        sa.Column("token_id", sa.String(32), nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("label", sa.String(256), nullable=False),
        sa.Column("log_ids", sa.Text(), nullable=False),
        sa.Column("producer_key_ids", sa.Text(), nullable=False),
        sa.Column("run_ids", sa.Text(), nullable=False),
        sa.Column("created_by", sa.String(32), nullable=True),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("revoked_at", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint("token_id"),
        sa.UniqueConstraint("token_hash", name="uq_api_tokens_hash"),
    )


def downgrade() -> None:
    op.drop_table("api_tokens")
