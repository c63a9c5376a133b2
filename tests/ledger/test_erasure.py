"""Erasure of runs and of data subjects, recorded in the log (docs/storage.md "Payloads and
erasure"), on SQLite and PostgreSQL: what is erased stops reading everywhere, what is not still
reads, each erasure is one `erasure` event signed by the log key, proofs and audit stay valid,
and the adversarial cases (a second erasure, unknown or malformed names, late data of an
erased person, forged `subjects`) get the answer the spec gives."""

from __future__ import annotations

import json

import pytest
import sqlalchemy as sa

from rlhf_ledger.core import merkle
from rlhf_ledger.core.errors import EventError, NotFoundError
from rlhf_ledger.core.events import commit_fields
from rlhf_ledger.store import db
from rlhf_ledger.store.ledger import BatchRejected, Ledger, audit
from rlhf_ledger.store.payloads import PayloadCrypto, PayloadError
from tests.ledger.helpers import Producer

ALICE = "anp:" + "a1" * 32
BOB = "anp:" + "b2" * 32
CAROL = "anp:" + "c3" * 32


def _batch(p: Producer, run: str, tag: str, subjects: dict | None) -> dict:
    body, op = commit_fields({"batch_id": tag, "prompts": [f"prompt {tag}"], "responses": [f"response {tag}"],
                              "notes": f"run note {tag}"}, ["prompts", "responses", "notes"])
    env = p.event(run_id=run, type="annotation.batch", body=body)
    env["openings"] = op
    if subjects is not None:
        env["subjects"] = subjects
    return env


def _erasure_events(ledger: Ledger, log_id: str) -> list[tuple[int, dict]]:
    return [(r.idx, json.loads(r.entry)["event"]) for r in ledger.iter_entries(log_id, run_id="rlhf-ledger:erasures")]


def _values(opened) -> set:
    return {json.dumps(o["value"]) for o in (opened.openings if opened else {}).values()}


@pytest.fixture
def world(ledger):
    """Two logs; Alice's data in three runs (two in log A, one in log B), Bob's in two."""
    for log_id in ("log-a", "log-b"):
        ledger.init_log(log_id, checkpoint_every_events=1000)
    pa, pb = Producer("log-a"), Producer("log-b")
    ledger.register_producer("log-a", pa.signer.public_key)
    ledger.register_producer("log-b", pb.signer.public_key)
    idx = {}
    for key, p, run, subj in [
        ("a1", pa, "run-1", {"prompts": [ALICE], "responses": [ALICE, BOB]}),
        ("a2", pa, "run-2", {"prompts": [ALICE]}),
        ("a3", pa, "run-2", {"prompts": [BOB]}),
        ("b1", pb, "run-9", {"prompts": [ALICE], "responses": [ALICE]}),
        ("b2", pb, "run-9", None),
    ]:
        [r] = ledger.append([_batch(p, run, key, subj)])
        idx[key] = (p.log_id, r.index)
    return ledger, idx, pa, pb


def test_subject_erasure_across_three_runs_and_two_logs(world):
    ledger, idx, pa, pb = world
    for k in idx:
        assert f'["prompt {k}"]' in _values(ledger.read_openings(*idx[k]))  # everything reads before
    for log_id in ("log-a", "log-b"):
        ledger.checkpoint(log_id)
    sizes = {log_id: ledger.size(log_id) for log_id in ("log-a", "log-b")}

    e = ledger.erase_subject(ALICE)

    assert not e.already and sorted(lg for lg, _ in e.recorded) == ["log-a", "log-b"]
    assert e.entries == {"log-a": 2, "log-b": 1} and e.runs == {"log-a": 2, "log-b": 1}
    # exactly one erasure event per log, at the next index, signed by the log key, naming only the pseudonym
    for log_id, at in e.recorded:
        assert at == sizes[log_id] and ledger.size(log_id) == sizes[log_id] + 1
        [(i, ev)] = _erasure_events(ledger, log_id)
        assert i == at and ev["type"] == "erasure" and ev["producer"] == ledger.log_info(log_id).key_id
        assert ev["body"] == {"erased": "subject", "subject": ALICE, "entries": e.entries[log_id], "runs": e.runs[log_id]}
        assert "prompt" not in json.dumps(ev)
    # Alice's openings are gone everywhere; members naming only others, or no one, still read
    a1 = ledger.read_openings(*idx["a1"])
    assert a1.erased == {"prompts": "subject", "responses": "subject"} and set(a1.openings) == {"notes"}
    assert ledger.read_openings(*idx["a2"]).erased == {"prompts": "subject"}
    assert ledger.read_openings(*idx["b1"]).erased == {"prompts": "subject", "responses": "subject"}
    a3 = ledger.read_openings(*idx["a3"])
    assert a3.erased == {} and _values(a3) == {'["prompt a3"]', '["response a3"]', '"run note a3"'}
    assert ledger.read_openings(*idx["b2"]).erased == {}
    # proofs and audit are untouched
    for log_id in ("log-a", "log-b"):
        ledger.checkpoint(log_id)
        root = ledger.latest_checkpoint(log_id).root
        for lg, i in idx.values():
            if lg == log_id:
                n, proof = ledger.inclusion_proof(log_id, i)
                assert merkle.verify_inclusion(ledger.get_entry(log_id, i).leaf_hash, i, n, proof, root)
        assert audit(ledger, log_id) == []
    # one KEK file is left, and Bob's key (re-wrapped under it) still opens his data
    kek_files = [p.name for p in ledger.keys_dir.iterdir() if p.name.startswith("payload-kek")]
    assert len(kek_files) == 1


def test_second_subject_erasure_says_already_and_writes_nothing(world):
    ledger, idx, *_ = world
    first = ledger.erase_subject(ALICE)
    sizes = {lg: ledger.size(lg) for lg in ("log-a", "log-b")}
    again = ledger.erase_subject(ALICE)
    assert again.already and again.recorded == [] and sorted(again.previous) == sorted(first.recorded)
    assert {lg: ledger.size(lg) for lg in ("log-a", "log-b")} == sizes
    assert len([p for p in ledger.keys_dir.iterdir() if p.name.startswith("payload-kek")]) == 1
    assert ledger.read_openings(*idx["a3"]).erased == {}  # the re-rotation kept every other key


def test_unknown_and_malformed_subjects_are_clear_errors(world):
    ledger, idx, *_ = world
    sizes = {lg: ledger.size(lg) for lg in ("log-a", "log-b")}
    with pytest.raises(NotFoundError, match=f"no stored opening names subject {CAROL}"):
        ledger.erase_subject(CAROL)
    for bad in ("alice@example.com", "anp:" + "A1" * 32, "anp:" + "a" * 63, ALICE + "\n", ""):
        with pytest.raises(EventError, match="pseudonym anp:<64 lowercase hex>"):
            ledger.erase_subject(bad)
    assert {lg: ledger.size(lg) for lg in ("log-a", "log-b")} == sizes  # nothing written


def test_run_erasure_is_recorded_once_and_covers_subject_keyed_openings(world):
    ledger, idx, *_ = world
    size = ledger.size("log-a")
    e = ledger.erase_run("log-a", "run-2")
    assert not e.already and e.recorded == [("log-a", size)] and e.entries == {"log-a": 2}
    [(i, ev)] = _erasure_events(ledger, "log-a")
    assert i == size and ev["body"] == {"erased": "run", "run_id": "run-2", "entries": 2}
    # a3's openings name only Bob, whose key exists: the run key's layer still erases them
    for k in ("a2", "a3"):
        o = ledger.read_openings(*idx[k])
        assert o.run_erased and o.openings == {} and o.erased == {"notes": "run", "prompts": "run", "responses": "run"}
        with pytest.raises(PayloadError, match="erased"):
            ledger.read_payload(*idx[k])
    assert "prompt a1" in json.dumps(ledger.read_payload(*idx["a1"]))  # another run of the same log
    again = ledger.erase_run("log-a", "run-2")
    assert again.already and again.previous == [("log-a", size)] and again.recorded == []
    assert ledger.size("log-a") == size + 1
    ledger.checkpoint("log-a")
    assert audit(ledger, "log-a") == []
    # an erased run takes no new payloads (as before): the batch is refused, nothing stored
    pa = world[2]
    with pytest.raises(PayloadError, match="erased"):
        ledger.append([_batch(pa, "run-2", "late", None)])
    assert ledger.size("log-a") == size + 1


def test_unknown_run_and_log_are_clear_errors(world):
    ledger, *_ = world
    with pytest.raises(NotFoundError, match="run 'nope' has no stored openings in log 'log-a'"):
        ledger.erase_run("log-a", "nope")
    with pytest.raises(NotFoundError, match="no such log"):
        ledger.erase_run("no-log", "run-1")
    with pytest.raises(EventError, match="run id"):
        ledger.erase_run("log-a", "bad run\n")
    assert _erasure_events(ledger, "log-a") == []


def test_data_of_an_erased_subject_arriving_later_is_not_stored(world):
    ledger, idx, pa, pb = world
    ledger.erase_subject(ALICE)
    [r] = ledger.append([_batch(pa, "run-1", "late", {"prompts": [ALICE], "responses": [BOB]})])
    o = ledger.read_openings("log-a", r.index)
    assert o.erased == {"prompts": "subject"} and set(o.openings) == {"responses", "notes"}
    so = db.subject_openings.c
    assert not ledger.database.rows(sa.select(so.idx).where(so.log_id == "log-a", so.idx == r.index, so.subject == ALICE))
    sizes = {lg: ledger.size(lg) for lg in ("log-a", "log-b")}
    assert ledger.erase_subject(ALICE).already  # nothing new to record
    assert {lg: ledger.size(lg) for lg in ("log-a", "log-b")} == sizes
    # the event itself (its commitments) is in the log, and the proof holds
    ledger.checkpoint("log-a")
    n, proof = ledger.inclusion_proof("log-a", r.index)
    assert merkle.verify_inclusion(r.leaf_hash, r.index, n, proof, ledger.latest_checkpoint("log-a").root)


@pytest.mark.parametrize("subjects, where, why", [
    ({"nope": [ALICE]}, "events[0].subjects.nope", "without an opening"),
    ({"prompts": ["alice"]}, "events[0].subjects.prompts[0]", "pseudonym"),
    ({"prompts": [ALICE.upper()]}, "events[0].subjects.prompts[0]", "pseudonym"),
    ({"prompts": [ALICE, ALICE]}, "events[0].subjects.prompts", "twice"),
    ({"prompts": []}, "events[0].subjects.prompts", "1 to 64"),
    ({"prompts": ["anp:" + f"{i:064x}" for i in range(65)]}, "events[0].subjects.prompts", "1 to 64"),
    ({"prompts": ALICE}, "events[0].subjects.prompts", "1 to 64"),
    (["prompts"], "events[0].subjects", "object"),
])
def test_malformed_subjects_are_refused_with_their_path(world, subjects, where, why):
    ledger, idx, pa, _ = world
    size = ledger.size("log-a")
    with pytest.raises(BatchRejected) as err:
        ledger.append([_batch(pa, "run-1", "x", subjects)])
    (pos, e), = err.value.errors
    assert pos == 0 and e.code == "invalid_event" and e.where == where and why in e.message
    assert ledger.size("log-a") == size


def test_a_run_erased_before_erasures_were_recorded_gets_its_event(world):
    ledger, idx, *_ = world
    rk = db.run_keys.c
    with ledger.engine.begin() as conn:  # what erase_run did before this version: NULL, no event
        conn.execute(db.run_keys.update().where(rk.log_id == "log-b", rk.run_id == "run-9").values(wrapped_key=None, erased_at=1.0))
    e = ledger.erase_run("log-b", "run-9")
    assert not e.already and len(e.recorded) == 1
    assert ledger.erase_run("log-b", "run-9").already
    with ledger.engine.connect() as conn:
        assert conn.execute(sa.select(rk.erased_at).where(rk.run_id == "run-9")).scalar_one() == 1.0  # original time kept


def test_rows_written_before_subject_keys_still_read_and_erase(world):
    """A v1 payload row (members NULL: JCS of the openings under the run key) reads as before,
    and a run erasure marks each commitment of its body erased."""
    ledger, idx, pa, _ = world
    log_id, i = idx["a3"]
    entry = ledger.get_entry(log_id, i)
    openings = json.loads(json.dumps(ledger.read_payload(log_id, i)))
    crypto = ledger._payload_crypto()
    rk, p = db.run_keys.c, db.payloads.c
    with ledger.engine.begin() as conn:
        wrapped = conn.execute(sa.select(rk.wrapped_key).where(rk.log_id == log_id, rk.run_id == "run-2")).scalar_one()
        nonce, ct = PayloadCrypto.seal(crypto.unwrap(wrapped, log_id, "run-2"), openings, log_id, i, entry.event_id)
        conn.execute(db.payloads.update().where(p.log_id == log_id, p.idx == i).values(nonce=nonce, ciphertext=ct, members=None))
    assert ledger.read_payload(log_id, i) == openings
    ledger.erase_run(log_id, "run-2")
    assert ledger.read_openings(log_id, i).erased == {"notes": "run", "prompts": "run", "responses": "run"}


def test_tampered_sealed_payload_is_refused_not_misread(world):
    ledger, idx, *_ = world
    log_id, i = idx["a1"]
    p = db.payloads.c
    with ledger.engine.begin() as conn:
        ct = bytes(conn.execute(sa.select(p.ciphertext).where(p.log_id == log_id, p.idx == i)).scalar_one())
        conn.execute(db.payloads.update().where(p.log_id == log_id, p.idx == i).values(ciphertext=ct[:-1] + bytes([ct[-1] ^ 1])))
    with pytest.raises(PayloadError, match="does not decrypt"):
        ledger.read_openings(log_id, i)
    # the members list is bound to the ciphertext: dropping a member is detected too
    with ledger.engine.begin() as conn:
        conn.execute(db.payloads.update().where(p.log_id == log_id, p.idx == i).values(ciphertext=ct, members='["notes"]'))
    with pytest.raises(PayloadError, match="does not decrypt"):
        ledger.read_openings(log_id, i)


@pytest.mark.slow
def test_appends_racing_a_subject_erasure_leave_nothing_readable_or_unrecorded(ledger, tmp_path):
    """Two threads append openings naming Alice in a second and a third log (each batch in a new
    run, so logs and runs appear while the erasure runs) while the main thread erases her. After:
    no opening of hers reads anywhere, and every log that stored one under her key has its
    erasure event (the FOR SHARE / log-lock protocol of storage.md; SQLite serialises it all)."""
    import threading

    for log_id in ("race-a", "race-b", "race-c"):
        ledger.init_log(log_id)
    producers = {lg: Producer(lg) for lg in ("race-a", "race-b", "race-c")}
    for lg, p in producers.items():
        ledger.register_producer(lg, p.signer.public_key)
    ledger.append([_batch(producers["race-a"], "r0", "seed", {"prompts": [ALICE]})])
    stop, errors, stored = threading.Event(), [], []

    def writer(log_id: str) -> None:
        n = 0
        try:
            while not stop.is_set() and n < 200:
                [r] = ledger.append([_batch(producers[log_id], f"r{n}", f"{log_id}-{n}", {"prompts": [ALICE], "responses": [BOB]})])
                stored.append((log_id, r.index))
                n += 1
        except Exception as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=writer, args=(lg,)) for lg in ("race-b", "race-c")]
    for t in threads:
        t.start()
    while len(stored) < 4 and not errors:
        threading.Event().wait(0.01)
    e = ledger.erase_subject(ALICE)
    for _ in range(20):  # keep appending a little after the erasure
        if len(stored) > 30 or errors:
            break
        threading.Event().wait(0.05)
    stop.set()
    for t in threads:
        t.join(60)
    assert not errors, errors
    assert not e.already and ("race-a", ledger.size("race-a") - 1) in e.recorded
    so, er = db.subject_openings.c, db.erasures.c
    holding = {r[0] for r in ledger.database.rows(sa.select(so.log_id).where(so.subject == ALICE).distinct())}
    recorded = {r[0] for r in ledger.database.rows(sa.select(er.log_id).where(er.kind == "subject", er.target == ALICE))}
    assert holding <= recorded and "race-a" in holding
    for log_id, idx in stored:
        opened = ledger.read_openings(log_id, idx)
        assert opened.erased == {"prompts": "subject"} and set(opened.openings) == {"responses", "notes"}
    assert ledger.erase_subject(ALICE).already


def test_opening_key_is_rfc5869_hkdf_sha256():
    """The derivation storage.md specifies, checked against an independent HKDF (pycryptodome)."""
    import os

    from Crypto.Hash import SHA256
    from Crypto.Protocol.KDF import HKDF

    from rlhf_ledger.store.payloads import opening_key

    keys, subs = [os.urandom(32), os.urandom(32)], [ALICE, BOB]
    info = ("log-a\n17\nprompts\n" + ",".join(subs)).encode()
    want = HKDF(b"".join(keys), 32, b"rlhf-ledger-subject-opening/v1", SHA256, context=info)
    assert opening_key(keys, "log-a", 17, "prompts", subs) == want
    assert opening_key(keys[:1], "log-a", 17, "prompts", subs[:1]) != want
