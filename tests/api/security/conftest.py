"""The security suite's servers: `rlhf-ledger serve` itself (its real defaults: header
deadline, connection cap, keep-alive), on a free loopback port, SQLite or PostgreSQL."""

from __future__ import annotations

import base64
import os
import secrets
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from ..conftest import PASSPHRASE, ROOT, Producer, Server, create_pg_database, drop_pg_database, free_port, pg_available
from ..helpers import wait_ready


def start_serve(data_dir: Path, database_url: str | None = None, *, env: dict | None = None, args: list[str] | None = None,
                workers: int = 1) -> Server:
    from rlhf_ledger.api.tokens import create_admin_token

    data_dir.mkdir(parents=True, exist_ok=True)
    os.environ["RLHF_LEDGER_PASSPHRASE"] = PASSPHRASE
    admin = create_admin_token(str(data_dir), database_url)
    port = free_port()
    full = dict(os.environ)
    full.pop("DATABASE_URL", None)
    full.update(RLHF_LEDGER_HOME=str(data_dir), RLHF_LEDGER_PASSPHRASE=PASSPHRASE, RLHF_API_CHECKPOINT_INTERVAL="0.5",
                PYTHONPATH=str(ROOT), RLHF_API_RATE="0")
    if database_url:
        full["DATABASE_URL"] = database_url
    full.update(env or {})
    log_path = data_dir / f"serve-{port}.log"
    cmd = [sys.executable, "-m", "rlhf_ledger.cli", "serve", "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning",
           "--workers", str(workers), *(args or [])]
    proc = subprocess.Popen(cmd, cwd=str(ROOT), env=full, stdout=open(log_path, "wb"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    wait_ready(proc, url, log_path, "serve")
    return Server(url, data_dir, database_url, admin, proc, log_path)


def setup_log(srv: Server, log_id: str, run_ids: list[str]) -> tuple[Producer, str]:
    """A log with one producer and a submitter token bound to it and to `run_ids`."""
    admin = srv.client(srv.admin_token)
    r = admin.post("/v1/logs", json={"log_id": log_id, "checkpoint_every_events": 5})
    assert r.status_code == 201, r.text
    p = Producer()
    r = admin.post(f"/v1/logs/{log_id}/producers", json={"public_key": base64.b64encode(p.signer.public_key).decode()})
    assert r.status_code == 201, r.text
    r = admin.post("/v1/tokens", json={"role": "submitter", "log_ids": [log_id], "producer_key_ids": [p.key_id], "run_ids": run_ids})
    assert r.status_code == 201, r.text
    return p, r.json()["token"]


@pytest.fixture(scope="session")
def sec_server(tmp_path_factory):
    """SQLite, a short header deadline so the slow-client tests run in seconds."""
    srv = start_serve(tmp_path_factory.mktemp("sec"), args=["--header-timeout", "1.5", "--keep-alive", "2"])
    yield srv
    srv.stop()


@pytest.fixture(scope="session", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def any_server(request, tmp_path_factory):
    dbname = url = None
    if request.param == "postgres":
        if not pg_available():
            pytest.skip("PostgreSQL at 127.0.0.1:5432 is not reachable")
        dbname = create_pg_database()
        url = f"postgresql://postgres@127.0.0.1:5432/{dbname}"
    srv = start_serve(tmp_path_factory.mktemp(f"sec-{request.param}"), url)
    yield srv
    srv.stop()
    if dbname:
        drop_pg_database(dbname)


def alive(srv: Server) -> bool:
    return srv.proc.poll() is None and httpx.get(srv.url + "/healthz", timeout=10).status_code == 200


def unique(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(4)}"
