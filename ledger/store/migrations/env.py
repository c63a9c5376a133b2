"""Alembic environment: runs against the connection handed over by ledger.migrate."""

from alembic import context

from rlhf_ledger.store.api_tables import metadata as api_metadata
from rlhf_ledger.store.db import metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through ledger.migrate.upgrade(engine)")
context.configure(connection=connection, target_metadata=[metadata, api_metadata], render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
