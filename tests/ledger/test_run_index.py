"""Closing runs at run.end, and the run index (docs/run-index.md), on SQLite and PostgreSQL."""

from __future__ import annotations

import base64
import json

import pytest

from rlhf_ledger.core import merkle
from rlhf_ledger.core.errors import ProofError
from rlhf_ledger.core.jcs import canonicalize
from rlhf_ledger.core.run_index import parse_and_verify_note, record_leaf
from rlhf_ledger.store.ledger import BatchRejected
from rlhf_ledger.store.run_index import run_index, run_membership
from tests.ledger.helpers import Producer


@pytest.fixture
def log(ledger):
    ledger.init_log("default", checkpoint_every_events=10_000)
    return ledger


def _producer(log) -> Producer:
    p = Producer()
    log.register_producer("default", p.signer.public_key, label="p")
    return p


def test_events_after_run_end_are_refused_stored_or_in_the_same_batch(log):
    a, b = _producer(log), _producer(log)
    log.append([a.event("r1", "run.start", {}), b.event("r1"), a.event("r1", "run.end", {})])
    with pytest.raises(BatchRejected) as exc:
        log.append([b.event("r1")])
    err = exc.value.errors[0][1]
    # indices 0 and 1 are the two producers' key events (docs/keys.md)
    assert err.code == "run_ended" and "run 'r1' was closed by its run.end at index 4" in err.message
    # a second run.end is refused too; other runs are untouched
    with pytest.raises(BatchRejected):
        log.append([a.event("r1", "run.end", {})])
    c = _producer(log)
    with pytest.raises(BatchRejected) as exc:
        log.append([c.event("r2", "run.start", {}), c.event("r2", "run.end", {}), c.event("r2")])
    assert [i for i, _ in exc.value.errors] == [2]
    assert log.size("default") == 6  # 3 key events, 3 events: the whole batch was refused, nothing of it stored


def test_resubmitting_a_stored_run_end_is_still_idempotent(log):
    a = _producer(log)
    envs = [a.event("r1", "run.start", {}), a.event("r1", "run.end", {})]
    log.append(envs)
    again = log.append(envs)
    assert all(r.duplicate for r in again)




def test_run_index_records_match_the_entries(log):
    a, b = _producer(log), _producer(log)
    envs = [a.event("r1", "run.start", {}), b.event("r2"), a.event("r1"), b.event("r1"), a.event("r2"),
            a.event("r1", "run.end", {})]
    res = log.append(envs)  # after the two key events (indices 0 and 1)
    log.checkpoint("default")
    idx = run_index(log, "default", 8)
    info = log.log_info("default")
    parsed = parse_and_verify_note(idx.note, info.origin, info.public_key)
    assert (parsed.size, parsed.count, parsed.root) == (8, 3, idx.root)  # r1, r2 and rlhf-ledger:keys
    # the same note again (stored, deterministic)
    assert run_index(log, "default", 8).note == idx.note
    _, rec, pos, proof = run_membership(log, "default", "r1", 8)
    assert pos == 0  # "r1" < "r2"
    r1 = [res[i].leaf_hash for i in (0, 2, 3, 5)]
    assert rec["events"] == 4 and rec["ended"] is True
    assert base64.b64decode(rec["root"]) == merkle.root_from_leaf_hashes(r1)
    assert {p["key_id"]: p["seq"] for p in rec["producers"]} == {a.signer.key_id: 2, b.signer.key_id: 0}
    assert merkle.verify_inclusion(record_leaf(rec), pos, idx.count, proof, idx.root)
    _, rec2, pos2, _ = run_membership(log, "default", "r2", 8)
    _, keys, pos3, _ = run_membership(log, "default", "rlhf-ledger:keys", 8)
    assert pos3 == 2 and keys["events"] == 2 and [p["key_id"] for p in keys["producers"]] == [info.key_id]
    assert pos2 == 1 and rec2["events"] == 2 and rec2["ended"] is False


def test_incremental_index_equals_a_fresh_computation(log, backend):
    from rlhf_ledger.store.ledger import Ledger

    p = _producer(log)
    for k in range(5):
        log.append([p.event(f"run-{(k * 7 + j) % 4}") for j in range(9)])
        log.checkpoint("default")
        run_index(log, "default", log.size("default"))  # computed at every size
    final = run_index(log, "default", 46)
    # an older size asked for later is computed from the newest size below it
    mid = run_index(log, "default", 20)
    fresh = Ledger.open(*backend)
    try:
        import sqlalchemy as sa

        from rlhf_ledger.store import db

        with fresh.engine.begin() as c:
            c.execute(sa.delete(db.run_indexes))
            c.execute(sa.delete(db.run_records))
        assert run_index(fresh, "default", 20).note == mid.note
        assert run_index(fresh, "default", 46).note == final.note
    finally:
        fresh.close()


def test_a_tampered_run_index_note_is_refused(log):
    p = _producer(log)
    log.append([p.event("r1")])
    idx = run_index(log, "default", 2)  # the key event and r1's event: two runs
    info = log.log_info("default")
    forged = idx.note.replace("\n2\n2\n", "\n2\n3\n", 1)
    assert forged != idx.note
    with pytest.raises(ProofError, match="does not verify"):
        parse_and_verify_note(forged, info.origin, info.public_key)
    with pytest.raises(ProofError, match="origin"):
        parse_and_verify_note(idx.note, "other/origin", info.public_key)
    # a checkpoint note is never read as a run-index note (and vice versa: line 2 is no size)
    cp = log.checkpoint("default")
    with pytest.raises(ProofError):
        parse_and_verify_note(cp.note, info.origin, info.public_key)


def test_record_is_canonical_json(log):
    p = _producer(log)
    log.append([p.event("r1")])
    _, rec, _, _ = run_membership(log, "default", "r1", 2)
    assert set(rec) == {"run_id", "events", "root", "producers", "ended"}
    assert json.loads(canonicalize(rec)) == rec
