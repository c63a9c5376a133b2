"""Real-HTTP fixtures: uvicorn in a subprocess on a free loopback port, SQLite and PostgreSQL."""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from rlhf_ledger.core.events import make_event, sha256_hex, sign_event
from rlhf_ledger.core.jcs import canonicalize
from rlhf_ledger.core.keys import Signer
from tests.api.helpers import wait_ready

ROOT = Path(__file__).resolve().parents[2]
PASSPHRASE = "test-passphrase-api"
PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pg_available() -> bool:
    try:
        import psycopg

        with psycopg.connect(PG_ADMIN, connect_timeout=3):
            return True
    except Exception:
        return False


def create_pg_database() -> str:
    import psycopg

    name = "rlhf_api_test_" + secrets.token_hex(6)
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return name


def drop_pg_database(name: str) -> None:
    import psycopg

    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@dataclass
class Server:
    url: str
    data_dir: Path
    database_url: str | None
    admin_token: str
    proc: subprocess.Popen
    log_path: Path

    def client(self, token: str | None = None, **kw) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=60, **kw)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_server(data_dir: Path, database_url: str | None = None, *, workers: int = 1, env: dict | None = None) -> Server:
    from rlhf_ledger.api.tokens import create_admin_token

    data_dir.mkdir(parents=True, exist_ok=True)
    os.environ["RLHF_LEDGER_PASSPHRASE"] = PASSPHRASE
    admin = create_admin_token(str(data_dir), database_url)  # also creates/migrates the schema
    port = free_port()
    full_env = dict(os.environ)
    full_env.pop("DATABASE_URL", None)
    full_env.update(
        RLHF_LEDGER_HOME=str(data_dir),
        RLHF_LEDGER_PASSPHRASE=PASSPHRASE,
        RLHF_API_CHECKPOINT_INTERVAL="0.5",
        PYTHONPATH=str(ROOT),
    )
    if database_url:
        full_env["DATABASE_URL"] = database_url
    full_env.update(env or {})
    log_path = data_dir / f"server-{port}.log"
    cmd = [sys.executable, "-m", "uvicorn", "--factory", "rlhf_ledger.api.app:create_app", "--host", "127.0.0.1", "--port", str(port),
           "--workers", str(workers), "--log-level", "warning"]
    proc = subprocess.Popen(cmd, cwd=str(ROOT), env=full_env, stdout=open(log_path, "wb"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    wait_ready(proc, url, log_path, "server")
    return Server(url, data_dir, database_url, admin, proc, log_path)


@dataclass
class Producer:
    """A producer key with its per-run chain state, building signed envelopes."""

    signer: Signer = field(default_factory=Signer.generate)
    heads: dict[str, tuple[int, str | None]] = field(default_factory=dict)

    @property
    def key_id(self) -> str:
        return self.signer.key_id

    def events(self, log_id: str, run_id: str, n: int, type: str = "compute.usage") -> list[dict]:
        seq, prev = self.heads.get(run_id, (0, None))
        out = []
        for _ in range(n):
            ev = make_event(log_id=log_id, run_id=run_id, type=type, producer=self.key_id, seq=seq, prev=prev,
                            body={"device": "cpu", "seconds": seq})
            out.append(sign_event(ev, self.signer))
            prev, seq = sha256_hex(canonicalize(ev)), seq + 1
        self.heads[run_id] = (seq, prev)
        return out


def backends() -> list:
    return ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


@pytest.fixture(scope="session", params=backends())
def server(request, tmp_path_factory) -> Iterator[Server]:
    dbname = None
    url = None
    if request.param == "postgres":
        if not pg_available():
            pytest.skip("PostgreSQL at 127.0.0.1:5432 is not reachable")
        dbname = create_pg_database()
        url = f"postgresql://postgres@127.0.0.1:5432/{dbname}"
    srv = start_server(tmp_path_factory.mktemp(f"api-{request.param}"), url,
                       env={"RLHF_API_RATE": "0"})  # rate limits are tested on their own server
    try:
        yield srv
    finally:
        srv.stop()
        if dbname:
            drop_pg_database(dbname)


@dataclass
class World:
    """A log with a registered producer and tokens of every role."""

    server: Server
    log_id: str
    run_id: str
    producer: Producer
    other: Producer  # registered too, but not bound to the submitter token
    tokens: dict[str, str]
    base: int  # index of the first user event: the producers' key events come first (docs/keys.md)


@pytest.fixture(scope="session")
def world(server: Server) -> World:
    admin = server.client(server.admin_token)
    log_id = "log-" + secrets.token_hex(4)
    run_id = "run-" + secrets.token_hex(4)
    r = admin.post("/v1/logs", json={"log_id": log_id, "checkpoint_every_events": 10})
    assert r.status_code == 201, r.text
    prod, other = Producer(), Producer()
    import base64

    for p in (prod, other):
        r = admin.post(f"/v1/logs/{log_id}/producers", json={"public_key": base64.b64encode(p.signer.public_key).decode()})
        assert r.status_code == 201, r.text
    base = admin.get(f"/v1/logs/{log_id}").json()["size"]
    assert base == 2  # one producer.register key event per producer
    tokens = {"admin": server.admin_token}
    specs = {
        "submitter": {"role": "submitter", "log_ids": [log_id], "producer_key_ids": [prod.key_id], "run_ids": ["*"]},
        "submitter_other_log": {"role": "submitter", "log_ids": ["elsewhere"], "producer_key_ids": [prod.key_id], "run_ids": ["*"]},
        "auditor": {"role": "auditor", "log_ids": [log_id], "run_ids": [run_id]},
        "auditor_other_run": {"role": "auditor", "log_ids": [log_id], "run_ids": ["another-run"]},
    }
    for name, spec in specs.items():
        r = admin.post("/v1/tokens", json=spec)
        assert r.status_code == 201, r.text
        tokens[name] = r.json()["token"]
    # Some content: 25 events (two size-policy checkpoints, at base + 10 and base + 20).
    sub = server.client(tokens["submitter"])
    for n in (10, 10, 5):
        r = sub.post(f"/v1/logs/{log_id}/events", json={"events": prod.events(log_id, run_id, n)})
        assert r.status_code == 200, r.text
    return World(server, log_id, run_id, prod, other, tokens, base)
