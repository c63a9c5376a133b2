"""End-to-end behaviour over real HTTP against SQLite and PostgreSQL (fixture `server`)."""

from __future__ import annotations

import base64
import json
import secrets
import time

import sqlalchemy as sa

from rlhf_ledger.core import merkle
from rlhf_ledger.core.events import commit_fields, leaf_hash, make_event, sign_event
from rlhf_ledger.core.jcs import canonicalize
from rlhf_ledger.store import db
from rlhf_ledger.store.ledger import Ledger, audit

from .conftest import Producer
from .helpers import assert_problem, b64d, wait_for


def _verify_entry_proof(doc: dict) -> None:
    proof = doc["proof"]
    assert proof is not None
    lh = leaf_hash(canonicalize(doc["envelope"]))
    assert base64.b64encode(lh).decode() == doc["leaf_hash"]
    root = b64d(proof["checkpoint"]["root"])
    assert merkle.verify_inclusion(lh, doc["index"], proof["tree_size"], [b64d(h) for h in proof["inclusion"]], root)


def test_submit_and_prove(world):
    pub = world.server.client()
    for i in (world.base, world.base + 7, world.base + 19):  # the run's events follow the key events
        r = pub.get(f"/v1/logs/{world.log_id}/entries/{i}")
        assert r.status_code == 200, r.text
        doc = r.json()
        assert doc["index"] == i and doc["run_id"] == world.run_id
        _verify_entry_proof(doc)
        by_id = pub.get(f"/v1/logs/{world.log_id}/events/{doc['event_id']}").json()
        assert by_id["index"] == i and by_id["leaf_hash"] == doc["leaf_hash"]
    tl = pub.get(f"/v1/logs/{world.log_id}/entries/3/tlog-proof")
    assert tl.status_code == 200 and tl.headers["content-type"].startswith("text/plain")
    assert tl.text.startswith("c2sp.org/tlog-proof@v1\nextra ") and "\nindex 3\n" in tl.text


def test_checkpoints_and_consistency(world):
    pub = world.server.client()
    cps = pub.get(f"/v1/logs/{world.log_id}/checkpoints").json()
    sizes = [c["size"] for c in cps]
    m, n = world.base + 10, world.base + 20  # size-policy checkpoints every 10 entries
    assert sizes[:3] == [0, m, n], sizes
    latest = pub.get(f"/v1/logs/{world.log_id}/checkpoints/latest").json()
    assert latest["size"] >= n
    cm = pub.get(f"/v1/logs/{world.log_id}/checkpoints/{m}").json()
    cn = pub.get(f"/v1/logs/{world.log_id}/checkpoints/{n}").json()
    note = pub.get(f"/v1/logs/{world.log_id}/checkpoint")
    assert note.headers["content-type"].startswith("text/plain") and note.text == latest["note"]
    r = pub.get(f"/v1/logs/{world.log_id}/consistency", params={"first": m, "second": n}).json()
    assert merkle.verify_consistency(m, n, [b64d(h) for h in r["proof"]], b64d(cm["root"]), b64d(cn["root"]))
    assert_problem(pub.get(f"/v1/logs/{world.log_id}/consistency", params={"first": n, "second": m}), 422)
    assert_problem(pub.get(f"/v1/logs/{world.log_id}/consistency", params={"first": "x", "second": m}), 422)
    assert_problem(pub.get(f"/v1/logs/{world.log_id}/checkpoints/{m - 1}"), 404)


def test_idempotent_resubmission(world):
    sub = world.server.client(world.tokens["submitter"])
    run = "idem-" + secrets.token_hex(3)
    batch = world.producer.events(world.log_id, run, 5)
    first = sub.post(f"/v1/logs/{world.log_id}/events", json={"events": batch}).json()["results"]
    assert not any(r["duplicate"] for r in first)
    size = world.server.client().get(f"/v1/logs/{world.log_id}").json()["size"]
    again = sub.post(f"/v1/logs/{world.log_id}/events", json={"events": batch}).json()["results"]
    assert all(r["duplicate"] for r in again)
    assert [r["index"] for r in again] == [r["index"] for r in first]
    assert [r["event_id"] for r in again] == [r["event_id"] for r in first]
    assert world.server.client().get(f"/v1/logs/{world.log_id}").json()["size"] == size


def test_atomic_batch_refusal(world):
    sub = world.server.client(world.tokens["submitter"])
    pub = world.server.client()
    run = "atomic-" + secrets.token_hex(3)
    saved = dict(world.producer.heads)
    batch = world.producer.events(world.log_id, run, 5)
    bad = json.loads(json.dumps(batch))
    sig = bytearray(b64d(bad[2]["sig"]))
    sig[0] ^= 1
    bad[2]["sig"] = base64.b64encode(bytes(sig)).decode()
    del bad[4]["event"]["ts"]
    size = pub.get(f"/v1/logs/{world.log_id}").json()["size"]
    body = assert_problem(sub.post(f"/v1/logs/{world.log_id}/events", json={"events": bad}), 422)
    assert body["type"].endswith("/batch_rejected")
    got = {(e["index"], e["code"], e["where"]) for e in body["errors"]}
    assert (4, "invalid_event", "events[4].event") in got
    assert got <= {(4, "invalid_event", "events[4].event"), (2, "bad_signature", "events[2].sig")}  # later checks may report too
    del bad[4]
    body = assert_problem(sub.post(f"/v1/logs/{world.log_id}/events", json={"events": bad}), 422)
    assert [(e["index"], e["code"], e["where"]) for e in body["errors"]] == [(2, "bad_signature", "events[2].sig")]
    # a sequence gap: events 0,1,3 of the chain
    body = assert_problem(sub.post(f"/v1/logs/{world.log_id}/events", json={"events": [batch[0], batch[1], batch[3]]}), 422)
    assert [(e["index"], e["code"]) for e in body["errors"]] == [(2, "sequence_error")]
    assert pub.get(f"/v1/logs/{world.log_id}").json()["size"] == size  # nothing stored
    ok = sub.post(f"/v1/logs/{world.log_id}/events", json={"events": batch})
    assert ok.status_code == 200 and [r["index"] for r in ok.json()["results"]] == list(range(size, size + 5))
    world.producer.heads.update({k: v for k, v in world.producer.heads.items() if k not in saved})
    metrics = pub.get("/metrics").text
    assert 'ledger_events_rejected_total{reason="bad_signature"}' in metrics


def test_garbage_in_gives_precise_4xx(world):
    sub = world.server.client(world.tokens["submitter"])
    url = f"/v1/logs/{world.log_id}/events"
    b = assert_problem(sub.post(url, content=b'{"events": [', headers={"content-type": "application/json"}), 400)
    assert "line 1 column" in b["detail"]
    assert_problem(sub.post(url, content=b"\xff\xfe", headers={"content-type": "application/json"}), 400)
    assert_problem(sub.post(url, content=b"a=b", headers={"content-type": "application/x-www-form-urlencoded"}), 415)
    assert "exactly one member" in assert_problem(sub.post(url, json=[1, 2]), 422)["detail"]
    assert "1 to 1000" in assert_problem(sub.post(url, json={"events": []}), 422)["detail"]
    too_many = [{"event": {}, "sig": ""}] * 1001
    assert "got 1001" in assert_problem(sub.post(url, json={"events": too_many}), 422)["detail"]
    b = assert_problem(sub.post(url, json={"events": [5, {"event": "x", "sig": 1}]}), 422)
    assert [e["index"] for e in b["errors"]] == [0, 1]
    admin = world.server.client(world.tokens["admin"])
    b = assert_problem(admin.post("/v1/logs", content=b"{nope", headers={"content-type": "application/json"}), 400)
    assert b["type"].endswith("/malformed_json")
    b = assert_problem(admin.post("/v1/logs", json={"log_id": "bad id!"}), 422)
    assert b["errors"][0]["where"] == "body.log_id"
    assert_problem(admin.post(f"/v1/logs/{world.log_id}/producers", json={"public_key": "AAAA"}), 422)
    assert_problem(admin.post("/v1/logs", json={"log_id": world.log_id}), 409)
    pub = world.server.client()
    assert_problem(pub.get(f"/v1/logs/{world.log_id}/entries/-1"), 422)
    assert_problem(pub.get(f"/v1/logs/{world.log_id}/entries/99999999"), 404)
    assert_problem(pub.get(f"/v1/logs/{world.log_id}/entries/{2**70}"), 422)
    assert_problem(pub.get("/v1/logs/nosuchlog/checkpoints/latest"), 404)
    assert_problem(pub.get("/v1/nothing-here"), 404)
    assert_problem(pub.put("/v1/logs"), 405)
    assert_problem(world.server.client("rlt_" + "x" * 43).get("/v1/logs"), 401)


def test_payload_for_auditor_of_run_only(world):
    sub = world.server.client(world.tokens["submitter"])
    seq, prev = world.producer.heads[world.run_id]
    body, openings = commit_fields({"device": "cpu", "notes": "personal text"}, ["notes"])
    ev = make_event(log_id=world.log_id, run_id=world.run_id, type="human.review", producer=world.producer.key_id,
                    seq=seq, prev=prev, body=body)
    env = sign_event(ev, world.producer.signer)
    env["openings"] = openings
    r = sub.post(f"/v1/logs/{world.log_id}/events", json={"events": [env]})
    assert r.status_code == 200, r.text
    from rlhf_ledger.core.events import sha256_hex

    world.producer.heads[world.run_id] = (seq + 1, sha256_hex(canonicalize(ev)))
    idx = r.json()["results"][0]["index"]
    got = world.server.client(world.tokens["auditor"]).get(f"/v1/logs/{world.log_id}/entries/{idx}/payload")
    assert got.status_code == 200, got.text
    assert got.json()["openings"]["notes"]["value"] == "personal text"
    # the public entry carries the commitment only
    entry = world.server.client().get(f"/v1/logs/{world.log_id}/entries/{idx}").json()
    assert "personal text" not in json.dumps(entry)
    assert_problem(world.server.client(world.tokens["auditor_other_run"]).get(f"/v1/logs/{world.log_id}/entries/{idx}/payload"), 403)
    assert_problem(world.server.client().get(f"/v1/logs/{world.log_id}/entries/{idx}/payload"), 401)


def test_payload_marks_erased_openings(world):
    """After a subject erasure the auditor still gets the other openings of the entry, and
    `erased` names the rest; after a run erasure the payload is gone (410). The erasures run
    in a second process on the server's database, as `rlhf-ledger erase-*` would."""
    from rlhf_ledger.core.events import sha256_hex

    srv = world.server
    admin = srv.client(world.tokens["admin"])
    run_id = "erase-" + secrets.token_hex(3)
    auditor = admin.post("/v1/tokens", json={"role": "auditor", "log_ids": [world.log_id], "run_ids": [run_id]}).json()["token"]
    victim, keeper = "anp:" + secrets.token_hex(32), "anp:" + secrets.token_hex(32)
    body, openings = commit_fields({"reviewer": keeper, "notes": "victim's words", "summary": "keeper's words"}, ["notes", "summary"])
    ev = make_event(log_id=world.log_id, run_id=run_id, type="human.review", producer=world.producer.key_id, seq=0, prev=None,
                    body=body)
    world.producer.heads[run_id] = (1, sha256_hex(canonicalize(ev)))
    env = {**sign_event(ev, world.producer.signer), "openings": openings, "subjects": {"notes": [victim], "summary": [keeper]}}
    r = srv.client(world.tokens["submitter"]).post(f"/v1/logs/{world.log_id}/events", json={"events": [env]})
    assert r.status_code == 200, r.text
    idx = r.json()["results"][0]["index"]
    path = f"/v1/logs/{world.log_id}/entries/{idx}/payload"
    got = srv.client(auditor).get(path).json()
    assert {k: v["value"] for k, v in got["openings"].items()} == {"notes": "victim's words", "summary": "keeper's words"}
    assert got["erased"] == {}
    ledger = Ledger.open(srv.data_dir, srv.database_url)
    try:
        ledger.erase_subject(victim)
        got = srv.client(auditor).get(path).json()
        assert {k: v["value"] for k, v in got["openings"].items()} == {"summary": "keeper's words"}
        assert got["erased"] == {"notes": "subject"}
        ledger.erase_run(world.log_id, run_id)
    finally:
        ledger.close()
    assert_problem(srv.client(auditor).get(path), 410)


def test_anchor_status_and_anchored_proofs(world):
    """Anchor rows are written here as the anchoring worker would (emulated rows, real schema);
    the worker's own tests cover producing them from a real chain."""
    srv = world.server
    m, n = world.base + 10, world.base + 20  # the world's size-policy checkpoints
    covered, pending = world.base + 4, world.base + 15  # entries under the first and the second
    ledger = Ledger.open(srv.data_dir, srv.database_url)
    try:
        now = time.time()
        with ledger.engine.begin() as conn:
            base = dict(log_id=world.log_id, chain_id=31337, contract="0x" + "ab" * 20, attempts=1, created_at=now, updated_at=now)
            conn.execute(db.anchors.insert().values(checkpoint_size=m, prev_size=0, status="finalized", tx_hash="0x" + "11" * 32,
                                                    block_number=5, block_hash="0x" + "22" * 32, block_timestamp=1_700_000_000,
                                                    log_index=0, evidence=json.dumps({"confirmations": 12}), **base))
            conn.execute(db.anchors.insert().values(checkpoint_size=n, prev_size=m, status="submitted", tx_hash="0x" + "33" * 32, **base))
    finally:
        ledger.close()
    pub = srv.client()
    anchors = pub.get(f"/v1/logs/{world.log_id}/anchors").json()
    assert [(a["checkpoint_size"], a["status"]) for a in anchors] == [(m, "finalized"), (n, "submitted")]
    assert anchors[0]["covered_range"] == [0, m] and anchors[0]["confirmations"] == 12
    one = pub.get(f"/v1/logs/{world.log_id}/anchors/{anchors[0]['id']}").json()
    assert one["tx_hash"] == "0x" + "11" * 32 and one["block_number"] == 5
    assert [a["status"] for a in pub.get(f"/v1/logs/{world.log_id}/anchors", params={"status": "submitted"}).json()] == ["submitted"]
    assert_problem(pub.get(f"/v1/logs/{world.log_id}/anchors/999999"), 404)
    cov = pub.get(f"/v1/logs/{world.log_id}/entries/{covered}/anchor").json()
    assert cov["covered"] and cov["anchor"]["checkpoint_size"] == m and cov["since"] == 1_700_000_000
    cov = pub.get(f"/v1/logs/{world.log_id}/entries/{pending}/anchor").json()
    assert not cov["covered"] and [a["checkpoint_size"] for a in cov["pending"]] == [n]
    doc = pub.get(f"/v1/logs/{world.log_id}/entries/{covered}", params={"anchored": "true"}).json()
    assert doc["proof"]["tree_size"] == m and doc["proof"]["anchor"]["status"] == "finalized"
    _verify_entry_proof(doc)
    assert pub.get(f"/v1/logs/{world.log_id}/entries/{pending}", params={"anchored": "true"}).json()["proof"] is None
    assert pub.get(f"/v1/logs/{world.log_id}/entries/3/tlog-proof", params={"anchored": "true"}).text.count(f"\n{m}\n") == 1
    assert_problem(pub.get(f"/v1/logs/{world.log_id}/entries/{pending}/tlog-proof", params={"anchored": "true"}), 404)
    metrics = pub.get("/metrics").text
    line = next(ln for ln in metrics.splitlines() if ln.startswith(f'ledger_anchoring_lag_events{{log_id="{world.log_id}"}}'))
    size = pub.get(f"/v1/logs/{world.log_id}").json()["size"]
    assert float(line.split()[-1]) == size - m


def test_denials_are_signed_audit_log_events(world):
    pub = world.server.client()
    before = pub.get("/v1/logs/audit").json()["size"]
    path = f"/v1/logs/{world.log_id}/entries/0/payload"
    assert_problem(world.server.client(world.tokens["submitter"]).get(path), 403)

    def find():
        # Denials are aggregated per (client, status, reason, token) and window: an earlier 403 of
        # this token in the same window holds the record (with its own first path and a count).
        size = pub.get("/v1/logs/audit").json()["size"]
        entries = [pub.get(f"/v1/logs/audit/entries/{i}").json() for i in range(before, size)]
        return [e for e in entries if e["envelope"]["event"]["type"] == "access.denied"
                and e["envelope"]["event"]["body"].get("reason") == "auditor_required"
                and e["envelope"]["event"]["body"].get("role") == "submitter"]

    mine = wait_for(find, what="the denial record")
    ev = mine[0]["envelope"]["event"]
    assert ev["type"] == "access.denied" and ev["body"]["status"] == 403 and ev["body"]["role"] == "submitter"
    assert ev["body"]["reason"] == "auditor_required" and set(ev["body"]["client"]) == {"$commitment"}
    assert ev["body"]["count"] >= 1
    producers = pub.get("/v1/logs/audit/producers").json()
    assert ev["producer"] in {p["key_id"] for p in producers}
    assert 'ledger_api_denials_total{reason="auditor_required",status="403"}' in pub.get("/metrics").text


def test_ledger_audit_clean_and_ops(world):
    pub = world.server.client()
    assert pub.get("/healthz").json() == {"status": "ok"}
    assert pub.get("/readyz").json() == {"status": "ready"}
    spec = pub.get("/openapi.json").json()
    assert "/v1/logs/{log_id}/events" in spec["paths"] and "Problem" in spec["components"]["schemas"]
    assert pub.get("/docs").status_code == 200
    srv = world.server
    ledger = Ledger.open(srv.data_dir, srv.database_url)
    try:
        assert audit(ledger, world.log_id) == []
        assert audit(ledger, "audit") == []
    finally:
        ledger.close()


def test_token_lifecycle(world):
    admin = world.server.client(world.tokens["admin"])
    t = admin.post("/v1/tokens", json={"role": "auditor", "log_ids": [world.log_id], "run_ids": ["r"]}).json()
    assert t["token"].startswith("rlt_") and len(t["token"]) == 4 + 43
    listed = admin.get("/v1/tokens").json()
    assert t["token_id"] in {x["token_id"] for x in listed}
    assert all("token" not in x and "hash" not in json.dumps(x) for x in listed)
    c = world.server.client(t["token"])
    assert c.get("/v1/whoami").json()["role"] == "auditor"
    assert admin.post(f"/v1/tokens/{t['token_id']}/revoke").json()["revoked_at"] is not None
    assert_problem(c.get("/v1/whoami"), 401)
    assert_problem(admin.post(f"/v1/tokens/{t['token_id']}/revoke"), 404)
    b = assert_problem(admin.post("/v1/tokens", json={"role": "submitter", "log_ids": [world.log_id]}), 422)
    assert "producer key id" in b["detail"]
    # only the hash is stored
    ledger = Ledger.open(world.server.data_dir, world.server.database_url)
    try:
        from rlhf_ledger.store.api_tables import api_tokens

        with ledger.engine.connect() as conn:
            rows = conn.execute(sa.select(api_tokens)).all()
        assert all(t["token"] not in json.dumps([tuple(map(str, r)) for r in rows]) for _ in [0])
    finally:
        ledger.close()


def test_revoked_producer_refused(world):
    admin = world.server.client(world.tokens["admin"])
    p = Producer()
    kid = admin.post(f"/v1/logs/{world.log_id}/producers", json={"public_key": base64.b64encode(p.signer.public_key).decode()}).json()["key_id"]
    assert kid == p.key_id
    assert admin.post(f"/v1/logs/{world.log_id}/producers/{kid}/revoke").json()["status"] == "revoked"
    tok = admin.post("/v1/tokens", json={"role": "submitter", "log_ids": [world.log_id], "producer_key_ids": [kid], "run_ids": ["*"]}).json()["token"]
    b = assert_problem(world.server.client(tok).post(f"/v1/logs/{world.log_id}/events", json={"events": p.events(world.log_id, "rv", 1)}), 422)
    assert b["errors"][0]["code"] == "revoked_key"
    assert_problem(admin.post(f"/v1/logs/{world.log_id}/producers", json={"public_key": base64.b64encode(p.signer.public_key).decode()}), 409)


def test_bundles_stream_and_verify(world, tmp_path):
    """Bundles for an event, a range and a run, checked by the independent verifier."""
    from rlhf_verifier.cli import load_log_key
    from rlhf_verifier.verify import Options, verify_file

    srv = world.server
    admin = srv.client(world.tokens["admin"])
    log_id = "bundles-" + secrets.token_hex(3)
    admin.post("/v1/logs", json={"log_id": log_id, "checkpoint_every_events": 5, "checkpoint_every_seconds": 0.5}).raise_for_status()
    p = Producer()
    admin.post(f"/v1/logs/{log_id}/producers", json={"public_key": base64.b64encode(p.signer.public_key).decode()}).raise_for_status()
    tok = admin.post("/v1/tokens", json={"role": "submitter", "log_ids": [log_id], "producer_key_ids": [p.key_id], "run_ids": ["*"]}).json()["token"]
    sub = srv.client(tok)
    info = srv.client().get(f"/v1/logs/{log_id}").json()
    base = info["size"]  # the producer's key event comes first (docs/keys.md)
    # run "ra" opens with its run.start: a run bundle without one is invalid (docs/verifier.md)
    sub.post(f"/v1/logs/{log_id}/events", json={"events": p.events(log_id, "ra", 1, type="run.start")}).raise_for_status()
    for run, n in (("ra", 4), ("rb", 5), ("ra", 2)):
        sub.post(f"/v1/logs/{log_id}/events", json={"events": p.events(log_id, run, n)}).raise_for_status()
    pub = srv.client()
    wait_for(lambda: pub.get(f"/v1/logs/{log_id}/checkpoints/latest").json()["size"] == base + 12,
             what="the time-policy checkpoint")
    for path, events in ((f"/v1/logs/{log_id}/entries/{base + 3}/bundle", 1),
                         (f"/v1/logs/{log_id}/bundle?start={base + 2}&end={base + 9}", 7),
                         (f"/v1/logs/{log_id}/runs/ra/bundle", 7)):
        r = pub.get(path)
        assert r.status_code == 200, r.text
        assert r.headers["content-type"].startswith("application/vnd.rlhf-ledger.bundle.v2+jsonl")
        lines = [json.loads(x) for x in r.text.splitlines()]
        assert lines[0]["kind"] == "header" and lines[-1] == {"kind": "end", "events": events, "records": len(lines) - 1}
        assert [x["index"] for x in lines if x["kind"] == "key_event"] == list(range(base))
        f = tmp_path / "b.jsonl"
        f.write_bytes(r.content)
        # Nothing is anchored here: the log key is pinned; the producer key comes from its key event.
        res = verify_file(str(f), Options(log_keys=[load_log_key(info["vkey"])], jobs=0))
        assert res.valid, [x.line() for x in res.findings]
        assert res.events == events
        assert [(k["key_id"], k["registered_at_index"]) for k in res.producer_keys] == [(p.key_id, 0)]
    assert_problem(pub.get(f"/v1/logs/{log_id}/runs/nope/bundle"), 404)
    assert_problem(pub.get(f"/v1/logs/{log_id}/bundle", params={"start": 5, "end": 99}), 422)
    assert_problem(pub.get(f"/v1/logs/{log_id}/entries/3/bundle", params={"anchored": "true"}), 404)
