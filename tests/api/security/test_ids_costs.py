"""Items 5 and 7 and issue 10 item 9: one id grammar on every side, cost caps, no 500s for huge
integers, deep nesting or NULs; duplicate JSON keys refused at append (API and CLI)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from rlhf_ledger.core.errors import EventError
from rlhf_ledger.core.events import make_event, sha256_hex, sign_event, valid_id, validate_event
from rlhf_ledger.core.jcs import canonicalize
from rlhf_ledger.store.ledger import Ledger

from ..conftest import PASSPHRASE, ROOT, Producer
from ..helpers import assert_problem
from .conftest import alive, setup_log, unique
from .id_cases import ID_CASES

sys.path.insert(0, str(ROOT / "verifier"))
from rlhf_verifier.events import EventCheckError, check_event  # noqa: E402


def _event(log_id: str, run_id: str, producer: Producer | None = None) -> dict:
    p = producer or Producer()
    return {"v": 1, "log_id": log_id, "run_id": run_id, "type": "compute.usage", "producer": p.key_id, "seq": 0,
            "prev": None, "ts": "2026-01-31T12:00:00.000000Z", "body": {}}


@pytest.mark.parametrize("value,ok", ID_CASES, ids=[repr(c[0])[:40] for c in ID_CASES])
def test_id_grammar_ledger_and_verifier_agree(value, ok):
    assert valid_id(value) is ok
    for field in ("log_id", "run_id"):
        ev = _event("log" if field == "run_id" else value, value if field == "run_id" else "run")
        ledger_ok = verifier_ok = True
        try:
            validate_event(ev)
        except EventError:
            ledger_ok = False
        try:
            check_event(ev)
        except EventCheckError:
            verifier_ok = False
        assert ledger_ok is ok and verifier_ok is ok, (field, value, ledger_ok, verifier_ok)


def test_id_grammar_api(sec_server):
    admin = sec_server.client(sec_server.admin_token)
    log_id = unique("ids")
    p, tok = setup_log(sec_server, log_id, ["*"])
    sub = sec_server.client(tok)
    for value, ok in ID_CASES:
        # log creation (ids the API addresses: no '/')
        if "/" not in value and len(value) <= 128 and ok:
            assert admin.post("/v1/logs", json={"log_id": "L" + value[:127]}).status_code in (201, 409)
        elif not ok:
            r = admin.post("/v1/logs", json={"log_id": value})
            assert r.status_code == 422, (value, r.status_code, r.text[:200])
        # submission with that run id
        ev = make_event(log_id=log_id, run_id="placeholder", type="compute.usage", producer=p.key_id, seq=0, prev=None, body={})
        ev["run_id"] = value
        env = sign_event(ev, p.signer)
        r = sub.post(f"/v1/logs/{log_id}/events", json={"events": [env]})
        assert (r.status_code == 200) is ok, (value, r.status_code, r.text[:300])
        assert r.status_code < 500
    assert alive(sec_server)


@pytest.mark.slow
def test_slow_canonicalisation_counts_against_the_batch(sec_server):
    log_id = unique("slow")
    p, tok = setup_log(sec_server, log_id, ["*"])
    sub = sec_server.client(tok)

    def batch(n: int, run: str, slow: bool, big: bool = False) -> list[dict]:
        out, prev = [], None
        for seq in range(n):
            body = {"\u00e9t\u00e9": 1e300} if slow else {"x": seq}  # non-ASCII keys, exponent floats: the rfc8785 path
            if big:  # about 30 KiB on the slow path: charged 3 units per KiB
                body = {f"\u00e9{i}": 1e300 for i in range(1500)}
            ev = make_event(log_id=log_id, run_id=run, type="compute.usage", producer=p.key_id, seq=seq, prev=prev, body=body)
            out.append(sign_event(ev, p.signer))
            prev = sha256_hex(canonicalize(ev))
        return out

    b = assert_problem(sub.post(f"/v1/logs/{log_id}/events", json={"events": batch(101, "slow-1", True)}), 422)
    assert b["type"].endswith("/batch_too_costly") and "1010 units" in b["detail"]
    assert sub.post(f"/v1/logs/{log_id}/events", json={"events": batch(100, "slow-2", True)}).status_code == 200
    assert sub.post(f"/v1/logs/{log_id}/events", json={"events": batch(1000, "fast", False)}).status_code == 200
    assert_problem(sub.post(f"/v1/logs/{log_id}/events", json={"events": batch(15, "slow-big-1", True, big=True)}), 422)
    r = sub.post(f"/v1/logs/{log_id}/events", json={"events": batch(5, "slow-big-2", True, big=True)})
    assert r.status_code == 200, r.text[:300]


@pytest.mark.slow
def test_range_bundles_are_capped_and_paged(sec_server):
    log_id = unique("range")
    p, tok = setup_log(sec_server, log_id, ["*"])
    sub = sec_server.client(tok)
    for _ in range(2):
        assert sub.post(f"/v1/logs/{log_id}/events", json={"events": p.events(log_id, "r", 600)}).status_code == 200
    pub = sec_server.client()
    b = assert_problem(pub.get(f"/v1/logs/{log_id}/bundle", params={"start": 0, "end": 1001}), 422)
    assert b["type"].endswith("/range_too_large")
    r = pub.get(f"/v1/logs/{log_id}/bundle", params={"start": 0})
    assert r.status_code == 200 and 'rel="next"' in r.headers["link"] and "start=1000" in r.headers["link"]
    header = json.loads(r.text.splitlines()[0])
    assert header.get("mode", "inclusion") == "inclusion"
    r = pub.get(r.headers["link"].split(";")[0].strip("<>"))
    assert r.status_code == 200 and "link" not in r.headers


@pytest.mark.parametrize("q", [
    {"start": "9" * 5000, "end": "1"}, {"start": "-" + "9" * 5000}, {"start": "1e400"}, {"start": "\x00"},
])
def test_hostile_query_numbers(sec_server, q):
    r = sec_server.client().get("/v1/logs/audit/bundle", params=q)
    assert r.status_code == 422, r.text[:200]


@pytest.mark.slow
def test_nul_and_control_characters_never_500(any_server):
    admin = any_server.client(any_server.admin_token)
    log_id = unique("nul")
    for bad in ("a\x00b", "line\nbreak", "\u2014lead", " lead", "a\u0085b"):
        r = admin.post("/v1/logs", json={"log_id": log_id, "origin": bad})
        assert r.status_code == 422, (bad, r.status_code, r.text[:200])
    # the log id stays creatable (no key file left behind by a failed creation)
    assert admin.post("/v1/logs", json={"log_id": log_id, "origin": "example.com/ok"}).status_code == 201
    for field in ("label",):
        r = admin.post("/v1/tokens", json={"role": "admin", field: "x\x00y"})
        assert r.status_code == 422
    p = Producer()
    import base64

    r = admin.post(f"/v1/logs/{log_id}/producers", json={"public_key": base64.b64encode(p.signer.public_key).decode(), "label": "a\x00"})
    assert r.status_code == 422
    # NUL inside an event body is fine: bodies are stored as bytes
    r = admin.post(f"/v1/logs/{log_id}/producers", json={"public_key": base64.b64encode(p.signer.public_key).decode()})
    tok = admin.post("/v1/tokens", json={"role": "submitter", "log_ids": [log_id], "producer_key_ids": [p.key_id], "run_ids": ["*"]}).json()["token"]
    ev = make_event(log_id=log_id, run_id="r", type="compute.usage", producer=p.key_id, seq=0, prev=None, body={"s": "a\x00b"})
    assert any_server.client(tok).post(f"/v1/logs/{log_id}/events", json={"events": [sign_event(ev, p.signer)]}).status_code == 200
    assert alive(any_server)


def _dup_body(env: dict, where: str) -> bytes:
    """The envelope as JSON text with a duplicated member at `where` (a second, different value)."""
    text = json.dumps({"events": [env]})
    if where == "body":
        return text.replace('"body": {"x": 1}', '"body": {"x": 1, "x": 2}').encode()
    if where == "envelope":
        return text.replace('"sig": ', '"sig": "AAAA", "sig": ').encode()
    return text.replace('"seq": 0', '"seq": 0, "seq": 0').encode()


@pytest.mark.parametrize("where,path", [("body", "events[0].event.body"), ("envelope", "events[0]"), ("event", "events[0].event")])
def test_duplicate_keys_refused_by_the_api(sec_server, where, path):
    log_id = unique("dup")
    p, tok = setup_log(sec_server, log_id, ["*"])
    size = sec_server.client().get(f"/v1/logs/{log_id}").json()["size"]  # the producer's key event
    ev = make_event(log_id=log_id, run_id="r", type="compute.usage", producer=p.key_id, seq=0, prev=None, body={"x": 1})
    env = sign_event(ev, p.signer)
    raw = _dup_body(env, where)
    b = assert_problem(sec_server.client(tok).post(f"/v1/logs/{log_id}/events", content=raw, headers={"content-type": "application/json"}), 400)
    assert b["errors"][0]["code"] == "duplicate_key" and b["errors"][0]["where"] == path, b
    assert sec_server.client().get(f"/v1/logs/{log_id}").json()["size"] == size  # nothing stored
    # the honest text of the same event is accepted
    assert sec_server.client(tok).post(f"/v1/logs/{log_id}/events", json={"events": [env]}).status_code == 200


@pytest.mark.slow
def test_duplicate_keys_refused_by_the_cli(tmp_path):
    import os

    os.environ["RLHF_LEDGER_PASSPHRASE"] = PASSPHRASE
    d = tmp_path / "cli"
    ledger = Ledger.open(d)
    ledger.init_log("cli")
    p = Producer()
    ledger.register_producer("cli", p.signer.public_key)
    size = ledger.size("cli")  # the producer's key event
    ledger.close()
    good = p.events("cli", "r", 2)
    lines = [json.dumps(good[0]), json.dumps(good[1]).replace('"body": {', '"body": {"device": "gpu", ', 1)]
    src = tmp_path / "events.jsonl"
    src.write_text("\n".join(lines) + "\n")
    env = dict(os.environ, RLHF_LEDGER_PASSPHRASE=PASSPHRASE, PYTHONPATH=str(ROOT))
    out = subprocess.run([sys.executable, "-m", "rlhf_ledger.cli", "append", "--data-dir", str(d), "--log", "cli", str(src)],
                         cwd=str(ROOT), env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode != 0
    msg = out.stderr.strip().splitlines()[-1]
    assert "events.jsonl:2" in msg and "duplicate member name 'device'" in msg and "body" in msg, out.stderr
    assert "Traceback" not in out.stderr
    ledger = Ledger.open(d)
    try:
        assert ledger.log_info("cli").size == size  # nothing of the refused line's batch is stored (storage.md)
    finally:
        ledger.close()
