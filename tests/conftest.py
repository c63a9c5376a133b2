"""Shared fixtures: the ledger passphrase, fresh PostgreSQL databases, ledgers on both backends."""

from __future__ import annotations

import os
import uuid

import pytest
import sqlalchemy as sa

PG_ADMIN_URL = os.environ.get("RLHF_TEST_PG_ADMIN", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")

os.environ.setdefault("RLHF_LEDGER_PASSPHRASE", "test-passphrase-not-a-secret")


def _admin_engine() -> sa.Engine:
    return sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")


@pytest.fixture(scope="session")
def pg_server() -> str:
    """The real PostgreSQL server at 127.0.0.1:5432 (fails loudly if it is not there)."""
    eng = _admin_engine()
    try:
        with eng.connect() as c:
            c.execute(sa.text("SELECT 1"))
    except Exception as e:  # noqa: BLE001
        pytest.fail(f"PostgreSQL at 127.0.0.1:5432 is not reachable ({e}); scripts/services.sh starts it")
    finally:
        eng.dispose()
    return PG_ADMIN_URL


@pytest.fixture
def pg_url(pg_server: str):
    """A fresh, empty PostgreSQL database for one test; dropped afterwards."""
    name = f"rlhf_test_{uuid.uuid4().hex[:12]}"
    eng = _admin_engine()
    with eng.connect() as c:
        c.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    try:
        yield url
    finally:
        with eng.connect() as c:
            c.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        eng.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request, tmp_path):
    """(data_dir, database_url or None) for each storage backend: the same suite runs on both."""
    if request.param == "sqlite":
        yield tmp_path / "data", None
    else:
        url = request.getfixturevalue("pg_url")
        yield tmp_path / "data", url


@pytest.fixture
def ledger(backend):
    from rlhf_ledger.store.ledger import Ledger

    data_dir, url = backend
    lg = Ledger.open(data_dir, url)
    yield lg
    lg.close()
