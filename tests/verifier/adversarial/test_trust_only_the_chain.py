"""Issue 12, "Trust only the chain": the regulator gives the chain id, the contract and one block
hash; the log key comes from the contract's storage (each anchor's log key proof), the producer
keys from the log's own key events. Each attack of an exporter (or a log operator, or a holder
of a stolen key) beside the honest bundle it starts from. Bundles are built with the ledger's own
code (tests/verifier/factory.py); the anvil and Hardhat tests cover real chains."""

from __future__ import annotations

import base64
import json

import pytest
from factory import CODE_HASH, build_bundle, read_records, write_records

from rlhf_verifier.cli import main
from rlhf_verifier.keys import KeyEvents, KeyEventsError


def _verify(args, capsys) -> tuple[int, dict]:
    code = main([str(a) for a in args] + ["--json"])
    out = capsys.readouterr()
    assert "Traceback" not in out.out + out.err and "internal error" not in out.err, out.err
    return code, (json.loads(out.out) if out.out.strip() else {})


def _checks(rep: dict) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for f in rep["findings"]:
        out.setdefault(f["check"], []).append(f["message"])
    return out


@pytest.fixture
def honest(tmp_path):
    return build_bundle(tmp_path / "b.jsonl", producers=2, key_events=True, checkpoint_sizes=None)


def test_the_minimal_command_proves_everything_from_the_chain(honest, capsys):
    code, rep = _verify(honest.minimal_args("--rules", "eu-ai-act"), capsys)
    assert code == 0 and rep["verdict"] == "valid", rep["findings"]
    t = rep["trusted"]
    assert t["log_keys"] == [honest.log_vkey] and "the contract's storage at block(s) 100" in t["log_keys_source"]
    assert len(t["producer_keys"]) == 2 and "registered in the log's key events" in t["producer_keys_source"]
    assert rep["anchors"][0]["contract_code"].startswith("ProvenanceAnchor")
    assert rep["warnings"] == []
    # pins that agree change nothing
    code, rep = _verify(honest.args(), capsys)
    assert code == 0, rep["findings"]


def test_a_pinned_log_key_must_agree_with_the_contract(honest, capsys):
    from rlhf_ledger.core.checkpoints import vkey
    from rlhf_ledger.core.keys import Signer

    wrong = vkey("rlhf-ledger.local/log-1", Signer.generate().public_key)
    code, rep = _verify(honest.minimal_args("--log-key", wrong), capsys)
    assert code == 1 and "is not the key the contract holds" in _checks(rep)["log_key"][0]


def _edit_proof(b, fn) -> None:
    objs = read_records(b)
    for o in objs:
        if o["kind"] == "anchor":
            fn(o["evidence"]["log_key_proof"])
    write_records(b, objs)


def test_a_tampered_log_key_proof_is_refused(honest, capsys):
    # the exporter replaces the storage proof's last node (the leaf holding the key)
    def swap(proof):
        proof["storage_proof"][-1] = proof["storage_proof"][-1][:-4] + ("00" if not proof["storage_proof"][-1].endswith("00") else "11") + proof["storage_proof"][-1][-2:]
    _edit_proof(honest, swap)
    code, rep = _verify(honest.minimal_args(), capsys)
    checks = _checks(rep)
    assert code == 1 and any("log key slot is not proven" in m or "not proven" in m for m in checks["evidence.log_key_proof"])
    assert "no log key is proven" in checks["log_key"][0]


def test_a_proof_from_another_account_is_refused(honest, capsys):
    def drop_account(proof):
        proof["account_proof"] = proof["account_proof"][:1]
    _edit_proof(honest, drop_account)
    code, rep = _verify(honest.minimal_args(), capsys)
    assert code == 1 and any("account is not proven" in m for m in _checks(rep)["evidence.log_key_proof"])


def test_a_contract_with_other_code_is_not_read(tmp_path, capsys, monkeypatch):
    """An attacker deploys a contract of their own (another code hash) that stores any key: its
    storage is not read, and nothing is proven from it."""
    import factory

    other_code = bytes(32)
    real = factory.make_block
    monkeypatch.setattr(factory, "make_block", lambda *a, **k: real(*a, **{**k, "code_hash": other_code}))
    b = build_bundle(tmp_path / "b.jsonl", key_events=True)
    code, rep = _verify(b.minimal_args(), capsys)
    checks = _checks(rep)
    assert code == 1 and "is not a ProvenanceAnchor version this verifier knows" in checks["anchor.contract_code"][0]
    assert "no log key is proven" in checks["log_key"][0]
    assert CODE_HASH != other_code


def test_an_unconfirmed_anchor_proves_no_key(honest, capsys):
    code, rep = _verify([str(honest.path), "--chain-id", "31337", "--trusted-block-hash", "0x" + "ab" * 32], capsys)
    assert code == 1 and "no log key is proven" in _checks(rep)["log_key"][0]
    assert rep["anchors"] == [] and rep["counts"]["checkpoints"] == 0  # nothing verified under no key


def _drop(b, pred) -> None:
    write_records(b, [o for o in read_records(b) if not pred(o)])


def test_leaving_out_a_revocation_is_caught(tmp_path, capsys):
    """The exporter hides that producer 0 was revoked: the keys record (signed run index) says
    how many key events the log holds, so the omission is a finding, not a VALID."""
    b = build_bundle(tmp_path / "b.jsonl", producers=2, key_events=True, revoke_after=4)
    _drop(b, lambda o: o["kind"] == "key_event" and o["envelope"]["event"]["type"] == "producer.revoke")
    code, rep = _verify(b.minimal_args(), capsys)
    keys = _checks(rep)["keys"]
    assert code == 1 and any("the log has 3 events of this run" in m and "the bundle holds 2" in m for m in keys), keys
    assert "no producer key is proven" in _checks(rep)["producer_key"][0]


def test_leaving_out_the_keys_record_proves_no_key(honest, capsys):
    _drop(honest, lambda o: o["kind"] == "keys")
    code, rep = _verify(honest.minimal_args(), capsys)
    assert code == 1 and "without a keys record" in _checks(rep)["keys"][0]


def test_a_key_event_signed_by_another_key_is_refused(honest, capsys):
    from rlhf_ledger.core.events import make_event, sign_event
    from rlhf_ledger.core.keys import Signer

    objs = read_records(honest)
    ke = next(o for o in objs if o["kind"] == "key_event")
    thief = Signer.generate()
    ev = dict(ke["envelope"]["event"], producer=thief.key_id)
    ke["envelope"] = sign_event(make_event(**{k: ev[k] for k in ("log_id", "run_id", "type", "producer", "seq",
                                                                 "prev", "body", "ts")}), thief)
    write_records(honest, objs)
    code, rep = _verify(honest.minimal_args(), capsys)
    assert code == 1 and any("not signed by a trusted log key" in m for m in _checks(rep)["keys"])


def test_a_forged_registration_not_in_the_log_is_refused(honest, capsys):
    """A registration the log key holder signs but never appends (not in the anchored tree)."""
    import hashlib

    from rlhf_ledger.core.events import make_event, sign_event
    from rlhf_ledger.core.keys import Signer

    objs = read_records(honest)
    last = [o for o in objs if o["kind"] == "key_event"][-1]
    log_signer = Signer.from_seed(hashlib.sha256(b"log").digest())
    intruder = Signer.generate()
    prev = last["envelope"]["event"]
    ev = make_event(log_id=prev["log_id"], run_id=prev["run_id"], type="producer.register", producer=log_signer.key_id,
                    seq=prev["seq"] + 1, prev=hashlib.sha256(json.dumps(prev, sort_keys=True, separators=(",", ":")).encode()).hexdigest(),
                    body={"key_id": intruder.key_id, "public_key": base64.b64encode(intruder.public_key).decode()},
                    ts=prev["ts"])
    forged = {"kind": "key_event", "index": last["index"] + 1, "envelope": sign_event(ev, log_signer),
              "inclusion": last["inclusion"]}
    objs.insert(objs.index(last) + 1, forged)
    write_records(honest, objs)
    code, rep = _verify(honest.minimal_args(), capsys)
    keys = _checks(rep)["keys"]
    assert code == 1 and any("inclusion proof" in m for m in keys), keys


def test_a_pin_does_not_undo_a_revocation(tmp_path, capsys):
    b = build_bundle(tmp_path / "b.jsonl", producers=2, key_events=True, revoke_after=4)
    code, rep = _verify(b.minimal_args("--producer-key", b.producer_keys[0], "--producer-key", b.producer_keys[1]), capsys)
    found = _checks(rep)["producer_key"]
    assert code == 1 and found and all("was revoked at index" in m for m in found)
    assert "registered in the log's key events and pinned" in rep["trusted"]["producer_keys_source"]


def test_a_v2_header_with_a_producer_list_is_a_finding(honest, capsys):
    objs = read_records(honest)
    objs[0]["producers"] = [{"key_id": "00" * 32, "public_key": "AA==", "status": "active"}]
    write_records(honest, objs)
    code, rep = _verify(honest.minimal_args(), capsys)
    assert code == 1 and "not part of bundle format v2" in _checks(rep)["header"][0]


def test_version_1_bundles_are_not_read(honest, capsys):
    objs = read_records(honest)
    objs[0]["version"] = 1
    write_records(honest, objs)
    code = main([str(a) for a in honest.minimal_args()])
    err = capsys.readouterr().err
    assert code == 2 and "unsupported bundle version 1" in err


def _reg(kid_pub, legacy=False):
    import hashlib

    body = {"key_id": hashlib.sha256(kid_pub).hexdigest(), "public_key": base64.b64encode(kid_pub).decode()}
    if legacy:
        body["legacy"] = True
    return body


@pytest.mark.parametrize("events, message", [
    ([("producer.register", _reg(b"\x01" * 32)), ("producer.register", _reg(b"\x01" * 32))], "registered a second time"),
    ([("producer.register", _reg(b"\x01" * 32)), ("producer.register", _reg(b"\x02" * 32, legacy=True))],
     "legacy registration after a non-legacy"),
    ([("producer.revoke", {"key_id": "ab" * 32})], "not registered and active"),
    ([("producer.register", {**_reg(b"\x01" * 32), "key_id": "ab" * 32})], "not the SHA-256"),
    ([("producer.register", {**_reg(b"\x01" * 32), "legacy": False})], "register body"),
    ([("run.start", {"key_id": "ab" * 32})], "is not a key event"),
])
def test_the_key_event_rule_refuses_what_docs_keys_md_does_not_allow(events, message):
    k = KeyEvents("log-1")
    with pytest.raises(KeyEventsError, match=message):
        for i, (typ, body) in enumerate(events):
            k._apply(i, typ, body)


def test_a_rotated_log_key_verifies_each_checkpoint_under_the_key_of_its_anchor(tmp_path, capsys):
    """rotateLogKey: checkpoints anchored up to the rotation stay under the old key, later ones
    are under the new key; each anchor's state proof says which (contract.md)."""
    from factory import run_events

    n = len(run_events()) + 2  # with the two key events first
    b = build_bundle(tmp_path / "b.jsonl", producers=2, key_events=True, checkpoint_sizes=[6, n], rotate_after=6)
    both = [str(b.path), "--chain-id", "31337", "--contract", b.contract]
    for h in b.block_hashes:
        both += ["--trusted-block-hash", h]
    code, rep = _verify(both, capsys)
    assert code == 0, rep["findings"]
    assert len(rep["trusted"]["log_keys"]) == 2
    # one trusted block hash (the final anchor's) proves only the new key: what the old key signed
    # (the first checkpoint, the key events) is then not proven -- docs/trust-model.md says to
    # confirm one anchor per key era after a rotation (or use --rpc)
    code, rep = _verify(b.minimal_args(), capsys)
    assert code == 1 and any("checkpoint 6" in f["where"] for f in rep["findings"] if f["check"] == "checkpoint")


def test_a_rotated_away_key_signs_nothing_after_the_rotation(tmp_path, capsys):
    """The old log key (leaked, say) signs a checkpoint the contract's state at its anchor
    attributes to the new key: a named finding, even though the old key is proven elsewhere."""
    from factory import run_events

    n = len(run_events()) + 2
    b = build_bundle(tmp_path / "b.jsonl", producers=2, key_events=True, checkpoint_sizes=[6, n], rotate_after=6)
    objs = read_records(b)
    old = read_records(build_bundle(tmp_path / "old.jsonl", producers=2, key_events=True, checkpoint_sizes=[6, n]))
    final_old = next(o for o in old if o["kind"] == "checkpoint" and o["size"] == n)
    for o in objs:
        if o["kind"] == "checkpoint" and o["size"] == n:
            o["note"] = final_old["note"]  # the same tree, signed by the rotated-away key
        if o["kind"] == "anchor" and o["checkpoint_size"] == n:
            del o["manifest"]  # (the anchored manifest names the genuine note: left out, as it may be)
    write_records(b, objs)
    both = [str(b.path), "--chain-id", "31337", "--contract", b.contract]
    for h in b.block_hashes:
        both += ["--trusted-block-hash", h]
    code, rep = _verify(both, capsys)
    found = [f for f in rep["findings"] if f["check"] == "checkpoint"]
    assert code == 1 and found and "rotated-away or unregistered log key" in found[0]["message"], rep["findings"]


def test_an_attacker_state_proving_another_key_signs_nothing(tmp_path, capsys):
    """State proofs that show a key the log never used (an attacker's own contract storage at the
    pinned address is impossible, but a forged proof would show one): no checkpoint verifies."""
    from rlhf_ledger.core.keys import Signer

    b = build_bundle(tmp_path / "b.jsonl", key_events=True, proven_key_override=Signer.generate().public_key)
    code, rep = _verify(b.minimal_args(), capsys)
    assert code == 1 and "no checkpoint signed by a trusted log key" in " ".join(
        f["message"] for f in rep["findings"] if f["check"] == "vacuous")
