"""Items 4 and 6: denials cost the attacker; least privilege; scrubbed errors; file modes."""

from __future__ import annotations

import os
import stat
import time

import httpx
import pytest

from rlhf_ledger.store import db
from rlhf_ledger.store.ledger import Ledger

from ..helpers import assert_problem, wait_for
from .conftest import alive, setup_log, start_serve, unique


@pytest.fixture(scope="module")
def denial_server(tmp_path_factory):
    srv = start_serve(tmp_path_factory.mktemp("denials"), env={
        "RLHF_API_AUTH_FAIL_BURST": "5", "RLHF_API_AUTH_FAIL_RATE": "0.5", "RLHF_API_DENIAL_WINDOW": "1",
        "RLHF_API_AUDIT_MAX_PER_MINUTE": "3", "RLHF_API_AUDIT_CAP_PERIOD": "3",
    })
    yield srv
    srv.stop()


def _audit_events(srv, start: int = 0) -> list[dict]:
    pub = srv.client()
    size = pub.get("/v1/logs/audit").json()["size"]
    return [pub.get(f"/v1/logs/audit/entries/{i}").json()["envelope"]["event"] for i in range(start, size)]


@pytest.mark.slow
def test_unknown_token_flood_is_rate_limited_and_aggregated(denial_server):
    before = denial_server.client().get("/v1/logs/audit").json()["size"]
    t0 = time.monotonic()
    with httpx.Client(base_url=denial_server.url) as c:
        codes = [c.get("/v1/whoami", headers={"authorization": f"Bearer rlt_bogus{i}"}).status_code for i in range(200)]
    elapsed = time.monotonic() - t0
    assert codes[:5] == [401] * 5 and codes.count(429) >= 170, codes[:12]
    r = httpx.get(denial_server.url + "/v1/whoami", headers={"authorization": "Bearer rlt_bogus"})
    assert_problem(r, 429) and int(r.headers["retry-after"]) >= 1
    # a valid token from the same address is not held back (no NAT lock-out), nor the public
    assert denial_server.client(denial_server.admin_token).get("/v1/whoami").status_code == 200
    assert denial_server.client().get("/v1/logs").status_code == 200

    def records():
        evs = _audit_events(denial_server, before)
        denied = [e for e in evs if e["type"] == "access.denied"]
        over = [e for e in evs if e["type"] == "access.denied_overflow"]
        total = sum(e["body"]["count"] for e in denied) + sum(e["body"]["denials_not_itemised"] for e in over)
        return (denied, over) if total >= 200 else None

    denied, over = wait_for(records, timeout=30, what="aggregated denial records")
    # 200 denials -> at most two records (one per reason) per 1-s window and at most 3 (+1
    # overflow record) per 3-s cap period, however many requests the window saw
    periods = elapsed / 3 + 2
    assert len(denied) <= 3 * periods and len(over) <= periods, (len(denied), len(over), elapsed)
    assert len(denied) < 40
    assert {e["body"]["reason"] for e in denied} <= {"unknown_token", "auth_rate_limited"}
    assert max(e["body"]["count"] for e in denied) > 5
    assert alive(denial_server)


@pytest.mark.slow
def test_audit_growth_cap_is_itself_recorded(denial_server):
    admin = denial_server.client(denial_server.admin_token)
    log_id = unique("cap")
    setup_log(denial_server, log_id, ["*"])
    tokens = [admin.post("/v1/tokens", json={"role": "auditor", "log_ids": [log_id], "run_ids": ["x"]}).json()["token"] for _ in range(8)]
    time.sleep(3 - time.time() % 3 + 0.05)  # the start of a cap period (periods are aligned to 3 s)
    before = denial_server.client().get("/v1/logs/audit").json()["size"]
    # 8 distinct denial kinds (8 tokens, each refused once) in one window; the cap is 3 per period
    with httpx.Client(base_url=denial_server.url) as c:
        for t in tokens:
            assert_problem(c.get("/v1/tokens", headers={"authorization": f"Bearer {t}"}), 403)

    def overflow():
        evs = _audit_events(denial_server, before)
        over = [e for e in evs if e["type"] == "access.denied_overflow"]
        return (evs, over) if over else None

    evs, over = wait_for(overflow, timeout=20, what="the overflow record")
    denied = [e for e in evs if e["type"] == "access.denied" and e["body"]["reason"] == "admin_required"]
    assert len(denied) <= 3
    assert over[0]["body"]["records_not_written"] + len(denied) >= 8 and over[0]["body"]["cap_per_period"] == 3


def test_submitter_bound_to_runs(sec_server):
    log_id = unique("runs")
    p, tok = setup_log(sec_server, log_id, ["team-a-*", "shared-run"])
    base = sec_server.client().get(f"/v1/logs/{log_id}").json()["size"]  # the producer's key event
    c = sec_server.client(tok)
    assert c.post(f"/v1/logs/{log_id}/events", json={"events": p.events(log_id, "team-a-7", 2)}).status_code == 200
    assert c.post(f"/v1/logs/{log_id}/events", json={"events": p.events(log_id, "shared-run", 1)}).status_code == 200
    b = assert_problem(c.post(f"/v1/logs/{log_id}/events", json={"events": p.events(log_id, "team-b-1", 1)}), 403)
    assert b["type"].endswith("/run_not_bound") and b["errors"][0]["where"] == "events[0].event.run_id"
    b = assert_problem(c.post(f"/v1/logs/{log_id}/events", json={"events": p.events(log_id, "shared-run-2", 1)}), 403)
    assert sec_server.client().get(f"/v1/logs/{log_id}").json()["size"] == base + 3
    admin = sec_server.client(sec_server.admin_token)
    b = assert_problem(admin.post("/v1/tokens", json={"role": "submitter", "log_ids": [log_id], "producer_key_ids": [p.key_id]}), 422)
    assert "run id" in b["detail"]
    assert_problem(admin.post("/v1/tokens", json={"role": "submitter", "log_ids": [log_id], "producer_key_ids": [p.key_id],
                                                  "run_ids": ["bad\nrun*"]}), 422)


@pytest.mark.slow
def test_audit_service_key_cannot_be_revoked_over_the_api_and_rotates_when_revoked_offline(tmp_path):
    srv = start_serve(tmp_path / "svc")
    try:
        admin = srv.client(srv.admin_token)
        active = [p for p in admin.get("/v1/logs/audit/producers").json() if p["status"] == "active"]
        kid = active[0]["key_id"]
        b = assert_problem(admin.post(f"/v1/logs/audit/producers/{kid}/revoke"), 409)
        assert b["type"].endswith("/service_key")
    finally:
        srv.stop()
    ledger = Ledger.open(srv.data_dir)
    try:
        ledger.revoke_producer("audit", kid)  # offline, as an operator would
    finally:
        ledger.close()
    srv2 = start_serve(srv.data_dir)  # starts (it used to refuse), with a new service key
    try:
        prods = {p["key_id"]: p["status"] for p in srv2.client().get("/v1/logs/audit/producers").json()}
        assert prods[kid] == "revoked" and list(prods.values()).count("active") == 1
        before = srv2.client().get("/v1/logs/audit").json()["size"]
        assert_problem(srv2.client().get("/v1/tokens"), 401)
        wait_for(lambda: srv2.client().get("/v1/logs/audit").json()["size"] > before, timeout=20, what="a denial record after rotation")
    finally:
        srv2.stop()


def test_anchor_errors_served_without_credentials(sec_server):
    log_id = unique("anch")
    setup_log(sec_server, log_id, ["*"])
    secret_url = "https://alice:hunter2@rpc.example.net:8545/v3/0123456789abcdef0123456789abcdef?apikey=topsecret"
    ledger = Ledger.open(sec_server.data_dir, sec_server.database_url)
    try:
        with ledger.engine.begin() as conn:
            conn.execute(db.anchors.insert().values(log_id=log_id, checkpoint_size=1, prev_size=0, status="failed", attempts=3,
                                                    error=f"ConnectionError: HTTPSConnectionPool: {secret_url} unreachable",
                                                    created_at=time.time(), updated_at=time.time()))
    finally:
        ledger.close()
    text = sec_server.client().get(f"/v1/logs/{log_id}/anchors").text
    assert "rpc.example.net" in text
    for leak in ("hunter2", "alice", "0123456789abcdef0123456789abcdef", "topsecret"):
        assert leak not in text


@pytest.mark.slow
def test_log_ids_map_to_key_files_injectively_and_errors_show_no_paths(tmp_path):
    srv = start_serve(tmp_path / "paths")
    try:
        admin = srv.client(srv.admin_token)
        for log_id in ("a:b", "a_b"):  # used to share one key file
            assert admin.post("/v1/logs", json={"log_id": log_id}).status_code == 201
        assert admin.post("/v1/logs", json={"log_id": "A:b"}).status_code == 201  # case-insensitive file systems too
    finally:
        srv.stop()
    from rlhf_ledger.core.errors import KeyFileError
    from rlhf_ledger.core.keys import log_key_file_name

    names = {log_key_file_name(x) for x in ("a:b", "a_b", "a/b", "A:b", "A:B")}
    assert len(names) == 5 and len({n.lower() for n in names}) == 5
    keys = set(os.listdir(srv.data_dir / "keys"))
    assert {log_key_file_name(x) for x in ("a:b", "a_b", "A:b")} <= keys
    (srv.data_dir / "keys" / log_key_file_name("a:b")).write_text("{}")  # damaged
    ledger = Ledger.open(srv.data_dir)
    try:
        with pytest.raises(KeyFileError) as e:
            ledger.log_signer("a:b")
        assert str(srv.data_dir) not in str(e.value) and "/" not in str(e.value), str(e.value)
        assert ledger.log_signer("a_b").public_key != ledger.log_signer("A:b").public_key
    finally:
        ledger.close()


def test_data_files_are_private(sec_server):
    d = sec_server.data_dir
    assert stat.S_IMODE(os.stat(d).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(d / "keys").st_mode) == 0o700
    for name in ("ledger.sqlite3", "ledger.sqlite3-wal", "ledger.sqlite3-shm"):
        if (d / name).exists():
            assert stat.S_IMODE(os.stat(d / name).st_mode) == 0o600, name
    for k in os.listdir(d / "keys"):
        assert stat.S_IMODE(os.stat(d / "keys" / k).st_mode) == 0o600, k
