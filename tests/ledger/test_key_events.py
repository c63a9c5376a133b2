"""Producer keys as log entries (docs/keys.md), on SQLite and PostgreSQL: registration and
revocation are key events signed by the log key, reserved runs take no submitted event, and
the rule that derives key states refuses every sequence the spec does not allow."""

from __future__ import annotations

import base64
import json

import pytest

from rlhf_ledger.core import key_events as kev
from rlhf_ledger.core.errors import RevokedKeyError
from rlhf_ledger.core.events import make_event, sign_event
from rlhf_ledger.core.keys import verify
from rlhf_ledger.store.ledger import BatchRejected, audit
from tests.ledger.helpers import Producer


@pytest.fixture
def log(ledger):
    ledger.init_log("default", checkpoint_every_events=1000)
    return ledger


def _entry(log, index: int) -> dict:
    return json.loads(bytes(log.get_entry("default", index).entry))


def test_register_and_revoke_are_key_events_signed_by_the_log_key(log):
    info = log.log_info("default")
    p = Producer()
    assert log.register_producer("default", p.signer.public_key, label="alice's laptop") == p.signer.key_id
    env = _entry(log, 0)
    ev = env["event"]
    assert (ev["run_id"], ev["type"], ev["producer"], ev["seq"], ev["prev"]) == (
        kev.KEYS_RUN, kev.REGISTER, info.key_id, 0, None)
    assert ev["body"] == {"key_id": p.signer.key_id, "public_key": base64.b64encode(p.signer.public_key).decode()}
    assert "alice" not in json.dumps(env)  # the label stays in the database
    from rlhf_ledger.core.jcs import canonicalize

    assert verify(info.public_key, canonicalize(ev), base64.b64decode(env["sig"]))
    assert log.register_producer("default", p.signer.public_key) == p.signer.key_id  # idempotent
    assert log.size("default") == 1

    res = log.append(p.events(2))
    assert [r.index for r in res] == [1, 2]
    log.revoke_producer("default", p.signer.key_id)
    rev = _entry(log, 3)["event"]
    assert (rev["type"], rev["body"], rev["seq"]) == (kev.REVOKE, {"key_id": p.signer.key_id}, 1)
    log.revoke_producer("default", p.signer.key_id)  # already revoked: nothing more is written
    assert log.size("default") == 4
    row = next(r for r in log.producers("default") if r["key_id"] == p.signer.key_id)
    assert (row["status"], row["registered_idx"], row["revoked_idx"]) == ("revoked", 0, 3)
    with pytest.raises(BatchRejected) as ei:
        log.append(p.events(1))
    assert ei.value.errors[0][1].code == "revoked_key"
    with pytest.raises(RevokedKeyError):
        log.register_producer("default", p.signer.public_key)
    log.checkpoint("default")
    assert audit(log, "default") == []


def test_submitted_events_in_a_reserved_run_are_refused_whoever_signed_them(log):
    p = Producer()
    log.register_producer("default", p.signer.public_key)
    forged = p.event(run_id=kev.KEYS_RUN, type=kev.REGISTER, body=kev.register_body(Producer().signer.public_key))
    with pytest.raises(BatchRejected) as ei:
        log.append([forged])
    assert ei.value.errors[0][1].code == "reserved_run" and ei.value.errors[0][1].where == "events[0].event.run_id"
    # even signed by the log key itself: only the ledger writes the log's records
    signer = log.log_signer("default")
    ev = make_event(log_id="default", run_id="rlhf-ledger:anything", type="producer.register", producer=signer.key_id,
                    seq=0, prev=None, body={})
    with pytest.raises(BatchRejected) as ei:
        log.append([sign_event(ev, signer)])
    assert ei.value.errors[0][1].code == "reserved_run"
    assert log.size("default") == 1


def test_events_before_a_registration_are_unknown(log):
    p = Producer()
    with pytest.raises(BatchRejected) as ei:
        log.append(p.events(1))
    assert ei.value.errors[0][1].code == "unknown_key"
    assert log.size("default") == 0


def _reg(pub: bytes, legacy: bool = False) -> dict:
    return {"type": kev.REGISTER, "body": kev.register_body(pub, legacy=legacy)}


def test_key_states_rule():
    a, b = Producer().signer.public_key, Producer().signer.public_key
    ida = Producer(signer=None).signer.key_id  # unrelated id
    states = kev.key_states([(0, _reg(a, legacy=True)), (1, _reg(b)), (5, {"type": kev.REVOKE, "body": {"key_id": kev.register_body(b)["key_id"]}})])
    sa_, sb = states[kev.register_body(a)["key_id"]], states[kev.register_body(b)["key_id"]]
    assert sa_.accepts(0) and sa_.accepts(10**9)  # legacy: from index 0
    assert not sb.accepts(1) and sb.accepts(2) and sb.accepts(4) and not sb.accepts(5) and not sb.accepts(6)
    bad = [
        [(0, _reg(a)), (1, _reg(a))],  # registered twice
        [(0, {"type": kev.REVOKE, "body": {"key_id": ida}})],  # revoke of an unknown key
        [(0, _reg(a)), (1, _reg(b, legacy=True))],  # legacy after a non-legacy key event
        [(0, {"type": kev.REGISTER, "body": {**kev.register_body(a), "key_id": ida}})],  # key id not of the key
        [(0, {"type": kev.REGISTER, "body": {**kev.register_body(a), "legacy": False}})],
        [(0, {"type": kev.REGISTER, "body": {**kev.register_body(a), "extra": 1}})],
        [(0, {"type": "run.start", "body": {"key_id": ida}})],
        [(0, _reg(a)), (1, {"type": kev.REVOKE, "body": {"key_id": kev.register_body(a)["key_id"]}}),
         (2, {"type": kev.REVOKE, "body": {"key_id": kev.register_body(a)["key_id"]}})],  # revoked twice
    ]
    for events in bad:
        with pytest.raises(kev.KeyEventError):
            kev.key_states(events)


def test_a_new_registration_in_an_unmigrated_log_writes_the_legacy_ones_first(log):
    """Legacy registrations are only valid before every other key event: registering or revoking
    in a log that still has producers without key events migrates them first."""
    import time

    from rlhf_ledger.store import db

    old = Producer()
    with log.engine.begin() as c:  # a producer registered before key events existed
        c.execute(db.producers.insert().values(log_id="default", key_id=old.signer.key_id, public_key=old.signer.public_key,
                                               label="", status="active", registered_at=time.time()))
    log.append(old.events(2))
    new = Producer()
    log.register_producer("default", new.signer.public_key)
    events = [(i, _entry(log, i)["event"]) for i in range(2, 4)]
    assert [(e["type"], e["body"]["key_id"], e["body"].get("legacy")) for _, e in events] == [
        (kev.REGISTER, old.signer.key_id, True), (kev.REGISTER, new.signer.key_id, None)]
    states = kev.key_states(events)
    assert states[old.signer.key_id].accepts(0) and states[new.signer.key_id].accepts(4)
    log.checkpoint("default")
    assert audit(log, "default") == []
