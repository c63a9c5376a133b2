"""The storage suite: runs unchanged on SQLite and on the real PostgreSQL server."""

from __future__ import annotations

import base64
import copy
import json

import pytest
import sqlalchemy as sa

from rlhf_ledger.core import merkle
from rlhf_ledger.core.checkpoints import parse_and_verify
from rlhf_ledger.core.errors import LedgerError, NotFoundError
from rlhf_ledger.core.events import MAX_EVENT_BYTES, commit_fields, leaf_hash
from rlhf_ledger.store import db
from rlhf_ledger.store.ledger import BatchRejected, audit
from tests.ledger.helpers import Producer


@pytest.fixture
def log(ledger):
    ledger.init_log("default", checkpoint_every_events=50)
    return ledger


@pytest.fixture
def producer(log):
    p = Producer()
    log.register_producer("default", p.signer.public_key, label="trainer")
    return p


def snapshot(ledger) -> dict:
    """Everything stored that an append could change."""
    with ledger.engine.connect() as c:
        return {
            t.name: sorted(map(tuple, c.execute(sa.select(t)).all()), key=repr)
            for t in (db.entries, db.nodes, db.heads, db.checkpoints, db.logs, db.payloads)
        }


def test_append_assigns_gap_free_indices_and_proofs_verify(log, producer):
    # index 0 is the producer's key event (producer.register, docs/keys.md)
    res = log.append(producer.events(60)) + log.append(producer.events(30)) + log.append(producer.events(30))
    assert [r.index for r in res] == list(range(1, 121))
    assert not any(r.duplicate for r in res)
    # checkpoints are issued at the end of a batch once 50 events have accrued since the last
    assert [c.size for c in log.list_checkpoints("default")] == [0, 61, 121]
    cp = log.latest_checkpoint("default")
    root = log.root("default", cp.size)
    assert root == cp.root
    for i in (0, 1, 49, 99):
        n, proof = log.inclusion_proof("default", res[i].index)
        assert n == 121
        assert merkle.verify_inclusion(res[i].leaf_hash, res[i].index, n, proof, cp.root)
    proof = log.consistency_proof("default", 61, 121)
    assert merkle.verify_consistency(61, 121, proof, log.get_checkpoint("default", 61).root, cp.root)


def test_roots_match_an_independent_recomputation(log, producer):
    envs = producer.events(37)
    res = log.append(envs)
    hashes = [log.get_entry("default", 0).leaf_hash] + [r.leaf_hash for r in res]  # 0: the key event
    assert log.root("default") == merkle.root_from_leaf_hashes(hashes)
    entry = log.get_entry("default", 5).entry
    assert leaf_hash(entry) == hashes[5]


def test_resubmission_is_idempotent(log, producer):
    envs = producer.events(10)
    first = log.append(envs)
    before = snapshot(log)
    again = log.append(envs[3:7])
    assert [r.index for r in again] == [4, 5, 6, 7]  # index 0 is the key event
    assert all(r.duplicate for r in again)
    assert snapshot(log) == before
    # the same event twice in one new batch is stored once
    more = producer.events(2)
    res = log.append([more[0], more[0], more[1]])
    assert [r.index for r in res] == [11, 11, 12] and res[1].duplicate
    assert first[0].index == 1


@pytest.mark.slow
def test_checkpoint_notes_are_signed_c2sp_notes(log, producer):
    log.append(producer.events(3))
    cp = log.checkpoint("default")
    info = log.log_info("default")
    parsed = parse_and_verify(cp.note, info.origin, info.public_key)
    assert parsed.size == 4 and parsed.root == log.root("default")  # 3 events after the key event
    lines = cp.note.split("\n")
    assert lines[0] == "rlhf-ledger.local/default" and lines[1] == "4"
    assert base64.b64decode(lines[2]) == cp.root
    assert lines[4].startswith("\u2014 rlhf-ledger.local/default ")
    # on demand again at the same size returns the same checkpoint
    assert log.checkpoint("default").note == cp.note


def test_tlog_proof_file(log, producer):
    log.append(producer.events(5))
    log.checkpoint("default")
    text = log.tlog_proof("default", 2)
    head, _, note = text.partition("\n\n")
    lines = head.split("\n")
    assert lines[0] == "c2sp.org/tlog-proof@v1"
    entry = base64.b64decode(lines[1].removeprefix("extra "))
    assert lines[2] == "index 2"
    proof = [base64.b64decode(x) for x in lines[3:]]
    cp = log.latest_checkpoint("default")
    assert note == cp.note
    assert merkle.verify_inclusion(leaf_hash(entry), 2, cp.size, proof, cp.root)


def _refused(log, batch) -> BatchRejected:
    before = snapshot(log)
    with pytest.raises(BatchRejected) as ei:
        log.append(batch)
    assert snapshot(log) == before, "a refused batch must not change anything stored"
    return ei.value


def test_bad_signature_refused_whole_batch(log, producer):
    log.append(producer.events(2))
    good = producer.events(3)
    bad = copy.deepcopy(good)
    bad[1]["event"]["body"]["loss"] = 0.5
    err = _refused(log, bad)
    assert err.errors[0][0] == 1
    assert err.errors[0][1].code == "bad_signature"
    assert "events[1].sig" in str(err)


def test_unknown_and_revoked_keys(log, producer):
    stranger = Producer()
    err = _refused(log, stranger.events(1))
    assert err.errors[0][1].code == "unknown_key"
    log.append(producer.events(1))
    log.revoke_producer("default", producer.signer.key_id)
    err = _refused(log, producer.events(1))
    assert err.errors[0][1].code == "revoked_key"
    with pytest.raises(LedgerError):
        log.register_producer("default", producer.signer.public_key)


def test_sequence_gap_replay_and_fork(log, producer):
    envs = producer.events(4)
    log.append(envs[:2])
    err = _refused(log, [envs[3]])
    assert err.errors[0][1].code == "sequence_error" and "expected seq 2" in str(err)
    # a fork: a different event signed for an already used position
    fork = Producer(signer=producer.signer)
    forked = fork.events(2)[1]
    forked["event"]["body"] = {"step": 99}
    from rlhf_ledger.core.events import sign_event

    forked = sign_event(forked["event"], producer.signer)
    err = _refused(log, [forked])
    assert err.errors[0][1].code == "conflict"
    # prev that does not chain
    wrong_prev = copy.deepcopy(envs[2]["event"])
    wrong_prev["prev"] = "0" * 64
    err = _refused(log, [sign_event(wrong_prev, producer.signer)])
    assert err.errors[0][1].code == "sequence_error" and "prev" in str(err)
    # a first event that does not start at 0
    other_run = Producer(signer=producer.signer)
    other_run.events(1, run_id="run-2")
    err = _refused(log, other_run.events(1, run_id="run-2"))
    assert "seq 0" in str(err)


@pytest.mark.parametrize(
    "mutate, where",
    [
        (lambda e: e.pop("sig"), "events[0]"),
        (lambda e: e["event"].__setitem__("seq", "1"), "events[0].event.seq"),
        (lambda e: e["event"].__setitem__("seq", True), "events[0].event.seq"),
        (lambda e: e["event"].__setitem__("ts", "yesterday"), "events[0].event.ts"),
        (lambda e: e["event"].__setitem__("body", []), "events[0].event.body"),
        (lambda e: e["event"].__setitem__("extra", 1), "events[0].event"),
        (lambda e: e["event"].__setitem__("producer", "XYZ"), "events[0].event.producer"),
        (lambda e: e.__setitem__("sig", "!!notbase64"), "events[0].sig"),
        (lambda e: e["event"]["body"].__setitem__("x", float("nan")), "events[0].event"),
        (lambda e: e["event"]["body"].__setitem__("blob", "x" * MAX_EVENT_BYTES), "events[0].event"),
    ],
)
def test_malformed_events_get_specific_errors(log, producer, mutate, where):
    env = producer.events(1)[0]
    mutate(env)
    err = _refused(log, [env])
    pos, e = err.errors[0]
    assert pos == 0 and e.code == "invalid_event"
    assert e.where == where, str(e)


def test_malformed_non_object_inputs(log):
    err = _refused(log, ["not an object", 7, None])
    assert [p for p, _ in err.errors] == [0, 1, 2]


def test_openings_are_checked_encrypted_and_erasable(log, producer):
    body, openings = commit_fields({"step": 1, "prompt": "tell me a secret", "response": "no"}, ["prompt", "response"])
    env = producer.event(body=body)
    env["openings"] = openings
    [res] = log.append([env])
    with log.engine.connect() as c:
        blob = c.execute(sa.select(db.payloads.c.ciphertext)).scalar_one()
    assert b"tell me a secret" not in blob
    assert log.read_payload("default", res.index)["prompt"]["value"] == "tell me a secret"
    # a wrong opening is refused
    body2, op2 = commit_fields({"prompt": "a"}, ["prompt"])
    env2 = producer.event(body=body2)
    op2["prompt"]["value"] = "b"
    env2["openings"] = op2
    err = _refused(log, [env2])
    assert err.errors[0][1].where == "events[0].openings.prompt"
    # erasure: payload unreadable, proofs still verify
    log.checkpoint("default")
    log.erase_run("default", "run-1")
    with pytest.raises(LedgerError, match="erased"):
        log.read_payload("default", res.index)
    n, proof = log.inclusion_proof("default", res.index)
    assert merkle.verify_inclusion(res.leaf_hash, res.index, n, proof, log.latest_checkpoint("default").root)


def test_tampering_is_detected(log, producer):
    log.append(producer.events(60))
    log.checkpoint("default")
    assert audit(log, "default") == []
    e = db.entries.c
    with log.engine.begin() as c:
        row = c.execute(sa.select(db.entries).where(e.idx == 10)).first()
        tampered = row.entry.replace(b'"loss":0.25', b'"loss":0.35')
        c.execute(db.entries.update().where(e.idx == 10).values(entry=tampered))
    problems = audit(log, "default")
    assert any("entry 10" in p for p in problems), problems


def test_tampering_with_leaf_hash_too_is_caught_by_signed_root(log, producer):
    log.append(producer.events(60))
    log.checkpoint("default")
    e = db.entries.c
    with log.engine.begin() as c:
        row = c.execute(sa.select(db.entries).where(e.idx == 10)).first()
        tampered = row.entry.replace(b'"loss":0.25', b'"loss":0.35')
        c.execute(db.entries.update().where(e.idx == 10).values(entry=tampered, leaf_hash=leaf_hash(tampered)))
    problems = audit(log, "default")
    assert any("recomputed root differs" in p or "signature" in p for p in problems), problems


def test_deleted_row_is_detected(log, producer):
    log.append(producer.events(20))
    with log.engine.begin() as c:
        c.execute(db.entries.delete().where(db.entries.c.idx == 7))
    problems = audit(log, "default")
    assert any("entry index 7: missing" in p for p in problems), problems


def test_reordered_rows_are_detected(log, producer):
    log.append(producer.events(20))
    log.checkpoint("default")
    e = db.entries.c
    with log.engine.begin() as c:
        c.execute(db.entries.update().where(e.idx == 3).values(idx=-1))
        c.execute(db.entries.update().where(e.idx == 4).values(idx=3))
        c.execute(db.entries.update().where(e.idx == -1).values(idx=4))
    problems = audit(log, "default")
    assert problems, "swapping two rows must be detected"


def test_unknown_log_and_index_errors(log, producer):
    with pytest.raises(NotFoundError):
        log.log_info("nope")
    with pytest.raises(NotFoundError):
        log.get_entry("default", 1)
    with pytest.raises(LedgerError):
        log.inclusion_proof("default", 5, 3)


def test_event_for_another_log_refused(log, producer):
    other = Producer(log_id="other", signer=producer.signer)
    err = _refused(log, other.events(1))
    assert "events[0]" in str(err)
    with pytest.raises(BatchRejected):
        log.append(other.events(1), log_id="default")


def test_key_rotation_keeps_old_events_verifiable(log, producer):
    res = log.append(producer.events(3))
    new = Producer()
    log.register_producer("default", new.signer.public_key, label="rotated")
    log.revoke_producer("default", producer.signer.key_id)
    log.append(new.events(2))
    log.checkpoint("default")
    assert audit(log, "default") == []
    keys = {p["key_id"]: p for p in log.producers("default")}
    assert keys[producer.signer.key_id]["status"] == "revoked"
    entry = json.loads(log.get_entry("default", res[0].index).entry)
    from rlhf_ledger.core.jcs import canonicalize
    from rlhf_ledger.core.keys import verify

    pk = base64.b64decode(keys[producer.signer.key_id]["public_key"])
    assert verify(pk, canonicalize(entry["event"]), base64.b64decode(entry["sig"]))


@pytest.mark.slow
def test_parallel_prepare_in_worker_processes(log, producer):
    """append_stream with a process pool: same results as inline, refusals still per event."""
    from concurrent.futures import ProcessPoolExecutor

    batches = [producer.events(100) for _ in range(3)]
    bad = producer.events(100)
    bad[42]["event"]["body"]["loss"] = 9.0
    import multiprocessing

    # forkserver: forking the (multi-threaded) test runner could copy a held lock into a worker.
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("forkserver")) as ex:
        results = list(log.append_stream(batches, log_id="default", executor=ex))
        assert [r.index for batch in results for r in batch] == list(range(1, 301))
        with pytest.raises(BatchRejected) as ei:
            list(log.append_stream([bad], log_id="default", executor=ex))
    assert ei.value.errors[0][0] == 42 and ei.value.errors[0][1].code == "bad_signature"
    assert ei.value.errors[0][1].where == "events[42].sig"
    assert log.size("default") == 301
    log.checkpoint("default")
    assert audit(log, "default") == []


def test_parallel_signature_checks_in_threads(log, producer):
    """append_stream with a thread pool: signatures checked in the GIL-free loop beside the
    committing thread; same results as inline, refusals per event, nothing stored from a
    refused batch (schema errors and signature errors reported together)."""
    from concurrent.futures import ThreadPoolExecutor

    batches = [producer.events(100) for _ in range(3)]
    bad = producer.events(100)
    bad[42]["event"]["body"]["loss"] = 9.0
    bad[7]["event"]["seq"] = "x"
    with ThreadPoolExecutor(2) as ex:
        results = list(log.append_stream(batches, log_id="default", executor=ex))
        assert [r.index for batch in results for r in batch] == list(range(1, 301))
        before = snapshot(log)
        with pytest.raises(BatchRejected) as ei:
            list(log.append_stream([bad], log_id="default", executor=ex))
    assert [(i, e.code, e.where) for i, e in ei.value.errors] == [
        (7, ei.value.errors[0][1].code, "events[7].event.seq"), (42, "bad_signature", "events[42].sig")]
    assert snapshot(log) == before
    log.checkpoint("default")
    assert audit(log, "default") == []
