"""Apply the Alembic migrations in store/migrations to a database (idempotent), and report
where a database's schema stands (`rlhf-ledger migrate [--check]`)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy.engine import Engine

MIGRATIONS = Path(__file__).parent / "migrations"


def alembic_config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    return cfg


def upgrade(engine: Engine, revision: str = "head") -> None:
    cfg = alembic_config()
    with engine.connect() as conn:
        if engine.dialect.name == "postgresql":
            # Serialise concurrent first starts (several API workers) on one database.
            from sqlalchemy import text

            conn.execute(text("SELECT pg_advisory_xact_lock(727274)"))
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)
        conn.commit()


def upgrade_database(url: str) -> None:
    """Upgrade the database at `url` to the newest revision (the database only: no data
    directory or keys are needed, as in the Kubernetes migration Job)."""
    from rlhf_ledger.store import db

    engine = db.make_engine(url)
    try:
        upgrade(engine)  # advisory-locked on PostgreSQL
    finally:
        engine.dispose()


def schema_state(url: str) -> tuple[str | None, str]:
    """(current revision or None, newest revision) of the database at `url`, changing nothing."""
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    from rlhf_ledger.store import db

    engine = db.make_engine(url, writer=False)
    try:
        with engine.connect() as conn:
            current = MigrationContext.configure(conn).get_current_revision()
            conn.rollback()
    finally:
        engine.dispose()
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    return current, head or ""
