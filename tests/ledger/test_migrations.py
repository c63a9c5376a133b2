"""Schema migrations on both backends: 0003 (entries.event_key) upgrades a populated 0002
database in place and downgrades back, and the ledger works the same afterwards."""

from __future__ import annotations

import json

import pytest
import sqlalchemy as sa
from alembic import command

from rlhf_ledger.core.errors import NotFoundError
from rlhf_ledger.store import db
from rlhf_ledger.store.ledger import BatchRejected, audit
from rlhf_ledger.store.migrate import alembic_config
from tests.ledger.helpers import Producer


def _migrate(engine: sa.Engine, fn, revision: str) -> None:
    cfg = alembic_config()
    with engine.connect() as conn:
        cfg.attributes["connection"] = conn
        fn(cfg, revision)
        conn.commit()


def _columns(engine: sa.Engine) -> set[str]:
    return {c["name"] for c in sa.inspect(engine).get_columns("entries")}


def test_event_key_migration_round_trip(ledger):
    ledger.init_log("default", checkpoint_every_events=10)
    p, q = Producer(), Producer()
    for x in (p, q):
        ledger.register_producer("default", x.signer.public_key)
    first = ledger.append(p.events(7) + q.events(6, run_id="run-2"))
    ledger.engine.dispose()

    _migrate(ledger.engine, command.downgrade, "0002")
    assert "event_key" not in _columns(ledger.engine)
    uniques = {u["name"] for u in sa.inspect(ledger.engine).get_unique_constraints("entries")}
    assert "uq_entries_event" in uniques
    _migrate(ledger.engine, command.upgrade, "head")
    assert "event_key" in _columns(ledger.engine)
    uniques = {u["name"] for u in sa.inspect(ledger.engine).get_unique_constraints("entries")}
    assert "uq_entries_event" not in uniques

    with ledger.engine.connect() as c:
        rows = c.execute(sa.select(db.entries.c.event_id, db.entries.c.event_key)).all()
    assert len(rows) == 15 and all(k == db.event_key(e) for e, k in rows)  # 2 key events, 13 events
    for r in first:
        assert ledger.find_event("default", r.event_id).idx == r.index
    # the log goes on: resubmission answered, new events appended, forks refused, audit clean
    again = ledger.append([ledger_envelope(ledger, first[3].index)])
    assert again[0].duplicate and again[0].index == first[3].index
    more = ledger.append(p.events(3))
    assert [r.index for r in more] == [15, 16, 17]
    ledger.checkpoint("default")
    assert audit(ledger, "default") == []


def ledger_envelope(ledger, index: int) -> dict:
    import json

    return json.loads(bytes(ledger.get_entry("default", index).entry))


def test_resubmission_and_forks_are_found_without_an_event_id_index(ledger):
    ledger.init_log("default")
    p = Producer()
    ledger.register_producer("default", p.signer.public_key)
    evs = p.events(5)
    ledger.append(evs[:3])
    # already stored (seq <= head) and new ones in one batch: positions answered, rest appended
    res = ledger.append(evs[1:])
    # index 0 is the key event
    assert [(r.index, r.duplicate) for r in res] == [(2, True), (3, True), (4, False), (5, False)]
    # another event at a stored seq, signed by the same key, is a fork
    fork = Producer(signer=p.signer)
    fork.events(2)
    with pytest.raises(BatchRejected) as ei:
        ledger.append([fork.event(body={"step": 99})])  # seq 2 again, other content
    assert ei.value.errors[0][1].code == "conflict"
    assert ledger.find_event("default", res[3].event_id).idx == 5
    with pytest.raises(NotFoundError, match="64 hex"):
        ledger.find_event("default", "not-an-id")


def test_run_index_migration_backfills_ended_runs(ledger):
    """0004 on a populated 0003 log: runs already closed by a run.end stay closed after upgrade."""
    ledger.init_log("default", checkpoint_every_events=1000)
    p = Producer()
    ledger.register_producer("default", p.signer.public_key)
    ledger.append([p.event("r1", "run.start", {}), p.event("r1", "run.end", {}), p.event("r2")])
    ledger.engine.dispose()
    _migrate(ledger.engine, command.downgrade, "0003")
    assert "ended_runs" not in sa.inspect(ledger.engine).get_table_names()
    _migrate(ledger.engine, command.upgrade, "head")
    with ledger.engine.connect() as c:
        assert c.execute(sa.select(db.ended_runs.c.run_id, db.ended_runs.c.end_idx)).all() == [("r1", 2)]
    with pytest.raises(BatchRejected) as exc:
        ledger.append([p.event("r1")])
    assert exc.value.errors[0][1].code == "run_ended"
    assert ledger.append([p.event("r2")])[0].index == 4


def test_existing_logs_get_their_producers_as_legacy_key_events(ledger):
    """0005 and `migrate_keys` on a log whose producers were only database rows (before key
    events): every producer gets a legacy producer.register (and a revoked one its
    producer.revoke), the positions are cached, audit is clean, and the log goes on."""
    import time

    from rlhf_ledger.core import key_events as kev

    ledger.init_log("default", checkpoint_every_events=1000)
    p, q = Producer(), Producer()
    with ledger.engine.begin() as c:  # what register_producer wrote before key events existed
        for x in (p, q):
            c.execute(db.producers.insert().values(log_id="default", key_id=x.signer.key_id, public_key=x.signer.public_key,
                                                   label="old", status="active", registered_at=time.time()))
    ledger.append(p.events(3) + q.events(2, run_id="run-2"))
    with ledger.engine.begin() as c:  # revoked the old way: a row update only
        c.execute(db.producers.update().where(db.producers.c.key_id == q.signer.key_id)
                  .values(status="revoked", revoked_at=time.time()))
    ledger.engine.dispose()
    _migrate(ledger.engine, command.downgrade, "0004")
    _migrate(ledger.engine, command.upgrade, "head")
    assert {r["key_id"]: r["registered_idx"] for r in ledger.producers("default")} == {
        p.signer.key_id: None, q.signer.key_id: None}

    assert ledger.migrate_keys("default") == 3  # two legacy registrations, one revocation
    assert ledger.migrate_keys("default") == 0  # idempotent
    rows = {r["key_id"]: (r["registered_idx"], r["revoked_idx"]) for r in ledger.producers("default")}
    assert rows == {p.signer.key_id: (-1, None), q.signer.key_id: (-1, 7)}
    keys = [json.loads(bytes(r.entry))["event"] for r in ledger.iter_entries("default", run_id=kev.KEYS_RUN)]
    assert [(e["type"], e["body"]["key_id"], e["body"].get("legacy")) for e in keys] == [
        ("producer.register", p.signer.key_id, True), ("producer.register", q.signer.key_id, True),
        ("producer.revoke", q.signer.key_id, None)]
    assert all(e["producer"] == ledger.log_info("default").key_id for e in keys)
    states = kev.key_states((5 + i, e) for i, e in enumerate(keys))
    assert states[p.signer.key_id].accepts(0) and not states[q.signer.key_id].accepts(8)

    # the log goes on: the active key appends, the revoked one is refused, a new key registers
    assert ledger.append(p.events(1))[0].index == 8
    with pytest.raises(BatchRejected) as ei:
        ledger.append(q.events(1, run_id="run-2"))
    assert ei.value.errors[0][1].code == "revoked_key"
    r = Producer()
    ledger.register_producer("default", r.signer.public_key)
    assert {x["key_id"]: x["registered_idx"] for x in ledger.producers("default")}[r.signer.key_id] == 9
    ledger.checkpoint("default")
    assert audit(ledger, "default") == []

    # a schema round trip keeps the positions (0005 fills them from the key events)
    ledger.engine.dispose()
    _migrate(ledger.engine, command.downgrade, "0004")
    _migrate(ledger.engine, command.upgrade, "head")
    assert {x["key_id"]: (x["registered_idx"], x["revoked_idx"]) for x in ledger.producers("default")} == {
        **rows, r.signer.key_id: (9, None)}
    assert ledger.migrate_keys("default") == 0


def test_subject_keys_migration_keeps_payloads_written_before(ledger):
    """0006 on a populated 0005 database: payload rows written before (v1: the openings under the
    run key, no `members`) still read and still erase, and openings naming subjects then work."""
    from rlhf_ledger.core.events import commit_fields
    from rlhf_ledger.store.payloads import PayloadCrypto

    ledger.init_log("default", checkpoint_every_events=1000)
    p = Producer()
    ledger.register_producer("default", p.signer.public_key)
    body, op = commit_fields({"prompt": "old secret"}, ["prompt"])
    [old] = ledger.append([{**p.event("r1", "annotation.batch", body), "openings": op}])
    # make the row what 0005's code wrote: JCS of the openings under the run key (v1)
    crypto, rk = ledger._payload_crypto(), db.run_keys.c
    with ledger.engine.begin() as c:
        key = crypto.unwrap(c.execute(sa.select(rk.wrapped_key)).scalar_one(), "default", "r1")
        nonce, ct = PayloadCrypto.seal(key, op, "default", old.index, old.event_id)
        c.execute(db.payloads.update().values(nonce=nonce, ciphertext=ct, members=None))
    ledger.engine.dispose()
    _migrate(ledger.engine, command.downgrade, "0005")
    assert "subject_keys" not in sa.inspect(ledger.engine).get_table_names()
    _migrate(ledger.engine, command.upgrade, "head")
    assert ledger.read_payload("default", old.index)["prompt"]["value"] == "old secret"
    who = "anp:" + "5e" * 32
    body, op = commit_fields({"prompt": "new secret"}, ["prompt"])
    [new] = ledger.append([{**p.event("r1", "annotation.batch", body), "openings": op, "subjects": {"prompt": [who]}}])
    assert ledger.read_payload("default", new.index)["prompt"]["value"] == "new secret"
    assert ledger.erase_subject(who).recorded == [("default", new.index + 1)]
    assert ledger.read_payload("default", old.index)["prompt"]["value"] == "old secret"
    ledger.erase_run("default", "r1")
    assert ledger.read_openings("default", old.index).erased == {"prompt": "run"}
    ledger.checkpoint("default")
    assert audit(ledger, "default") == []
