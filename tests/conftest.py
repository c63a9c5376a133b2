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
    except Exception as e:
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


# --- the fast tier (issue 13): `pytest --fast` -----------------------------------------------------
# SQLite only, no chain, no servers, no browser, no slow tests: what a developer runs after each
# change, in under a minute (CONTRIBUTING.md). The full suite (`bash scripts/test.sh`) runs the rest.
FAST_SKIPPED_DIRS = {"deploy", "integration", "online"}
SLOW_FIXTURES = {"anvil", "owner", "hardhat", "kubo_rpc", "api_server", "api_servers", "pg_url", "pg_server",
                 "server", "world", "srv", "service", "chromium", "demo", "anchored", "clusters", "failover",
                 "install_venvs", "kubo"}  # kubo: a real Kubo node; tests/install: venvs built with pip from the registry


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--fast", action="store_true",
                     help="the fast tier: SQLite only, no chain, no servers, no slow tests (under a minute)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not config.getoption("--fast"):
        return
    keep, drop = [], []
    for item in items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        parts = set(item.path.relative_to(config.rootpath).parts)
        heavy = (any(item.get_closest_marker(m) for m in ("slow", "postgres", "anvil"))
                 or any(v in ("postgresql", "postgres") for v in params.values())
                 or set(item.fixturenames) & SLOW_FIXTURES or parts & FAST_SKIPPED_DIRS)
        (drop if heavy else keep).append(item)
    config.hook.pytest_deselected(items=drop)
    items[:] = keep
