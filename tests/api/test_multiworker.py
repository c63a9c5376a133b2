"""Two uvicorn worker processes on one PostgreSQL database produce one consistent log."""

from __future__ import annotations

import base64
from concurrent.futures import ThreadPoolExecutor

import pytest

from rlhf_ledger.store.ledger import Ledger, audit

from .conftest import Producer, create_pg_database, drop_pg_database, pg_available, start_server

pytestmark = pytest.mark.postgres


def test_two_workers_one_consistent_log(tmp_path):
    if not pg_available():
        pytest.skip("PostgreSQL at 127.0.0.1:5432 is not reachable")
    name = create_pg_database()
    url = f"postgresql://postgres@127.0.0.1:5432/{name}"
    srv = start_server(tmp_path / "data", url, workers=2, env={"RLHF_API_RATE": "0"})
    try:
        admin = srv.client(srv.admin_token)
        assert admin.post("/v1/logs", json={"log_id": "shared", "checkpoint_every_events": 50}).status_code == 201
        producers = [Producer() for _ in range(6)]
        tokens = []
        for p in producers:
            admin.post("/v1/logs/shared/producers", json={"public_key": base64.b64encode(p.signer.public_key).decode()}).raise_for_status()
            tokens.append(admin.post("/v1/tokens", json={"role": "submitter", "log_ids": ["shared"], "producer_key_ids": [p.key_id], "run_ids": ["*"]}).json()["token"])
        base = srv.client().get("/v1/logs/shared").json()["size"]
        assert base == len(producers)  # one producer.register key event each, before any event

        def submit(i: int) -> list[int]:
            c = srv.client(tokens[i])
            got: list[int] = []
            for _ in range(8):
                r = c.post("/v1/logs/shared/events", json={"events": producers[i].events("shared", f"run-{i}", 25)})
                assert r.status_code == 200, r.text
                got += [x["index"] for x in r.json()["results"]]
            return got

        with ThreadPoolExecutor(len(producers)) as pool:
            results = list(pool.map(submit, range(len(producers))))
        indices = sorted(i for part in results for i in part)
        assert indices == list(range(base, base + len(producers) * 8 * 25))
        for part in results:  # each client's events keep their order
            assert part == sorted(part)
        assert srv.client().get("/v1/logs/shared").json()["size"] == base + len(indices)
        ledger = Ledger.open(tmp_path / "check", url)
        try:
            assert audit(ledger, "shared") == []
        finally:
            ledger.close()
    finally:
        srv.stop()
        drop_pg_database(name)
