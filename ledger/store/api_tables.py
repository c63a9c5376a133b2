"""Tables of the API service for queries (SQLAlchemy Core).

They are created only by the Alembic migration ledger/migrations/versions/0002_api_auth.py;
this MetaData is separate from ledger.db.metadata and is never used to create tables.
"""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

# A token is shown once at creation; only SHA-256(token) is stored. token_id is a short public
# handle (first 16 hex digits of that hash) used in listings, revocations and audit records.
# log_ids / producer_key_ids / run_ids are JSON arrays of strings (empty = none bound).
api_tokens = sa.Table(
    "api_tokens",
    metadata,
    sa.Column("token_id", sa.String(32), primary_key=True),
    sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("role", sa.String(16), nullable=False),  # admin | submitter | auditor
    sa.Column("label", sa.String(256), nullable=False),
    sa.Column("log_ids", sa.Text, nullable=False),
    sa.Column("producer_key_ids", sa.Text, nullable=False),
    sa.Column("run_ids", sa.Text, nullable=False),
    sa.Column("created_by", sa.String(32)),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("revoked_at", sa.Float),
)
