"""The worker and the contract's append-only rule (issue 12, "Bad input"): the worker registers
the log when it holds the owner's key, sends the consistency proof from what the contract holds,
and a refused proof or a foreign registered key is a terminal failure with its reason, never
retried with the same proof."""

from __future__ import annotations

import pytest

from rlhf_ledger.anchoring.chain import ChainClient, log_id_for_origin
from rlhf_ledger.anchoring.content_store import LocalContentStore
from rlhf_ledger.anchoring.worker import AnchorWorker
from tests.anchoring.conftest import FAST_RETRY
from tests.anchoring.fixtures import LOG, ledger, producer  # shared fixtures

pytestmark = pytest.mark.anvil


def _worker(anvil, owner, ledger, tmp_path, key_index: int = 0, **kw) -> AnchorWorker:  # type: ignore[no-untyped-def]
    c = ChainClient(anvil.rpc_url, anvil.private_keys[key_index], contract_address=owner.contract_address,
                    retry=FAST_RETRY)
    return AnchorWorker(ledger, c, LocalContentStore(tmp_path / "content"), LOG, **kw)


def test_owner_worker_registers_the_log_and_anchors_with_proofs(anvil, owner, ledger, producer, tmp_path):
    worker = _worker(anvil, owner, ledger, tmp_path, confirmations=1)
    info = ledger.log_info(LOG)
    log_id = log_id_for_origin(info.origin)
    assert owner.log_key(log_id) is None
    k = ledger.size(LOG)  # the producer's key event comes first (docs/keys.md)
    for n in (3, 5, 9):
        ledger.append(producer.events(n), log_id=LOG)
        ledger.checkpoint(LOG)
        assert worker.run_once().errors == []
        anvil.mine(2)
        assert worker.run_once().errors == []
    assert owner.log_key(log_id) == info.public_key
    assert owner.latest(log_id) == (k + 17, ledger.root(LOG, k + 17))
    assert {r.status for r in ledger.anchors.for_log(LOG)} <= {"confirmed", "finalized"}


def test_a_refused_consistency_proof_fails_once_with_its_reason(anvil, owner, ledger, producer, tmp_path, monkeypatch):
    worker = _worker(anvil, owner, ledger, tmp_path, max_attempts=5, confirmations=1)
    ledger.append(producer.events(4), log_id=LOG)
    anchored = ledger.checkpoint(LOG)
    worker.run_once()
    anvil.mine(2)
    worker.run_once()
    ledger.append(producer.events(4), log_id=LOG)
    refused = ledger.checkpoint(LOG)
    real = worker._chain_proof

    def forged(on_chain, size):  # a proof the contract must refuse
        proof = real(on_chain, size)
        return [bytes([proof[0][0] ^ 1]) + proof[0][1:]] + proof[1:]

    monkeypatch.setattr(worker, "_chain_proof", forged)
    first = worker.run_once()
    assert first.submitted == []
    row = ledger.anchors.for_log(LOG)[-1]
    assert row.status == "failed" and row.checkpoint_size == refused.size == anchored.size + 4
    assert "refused the consistency proof" in row.error and "InconsistentProof" in row.error
    worker.run_once()  # terminal: not tried again with the same proof
    assert ledger.anchors.for_log(LOG)[-1].attempts == row.attempts
    assert owner.latest(log_id_for_origin(ledger.log_info(LOG).origin))[0] == anchored.size


def test_a_log_registered_with_another_key_is_not_anchored(anvil, owner, ledger, producer, tmp_path):
    origin = ledger.log_info(LOG).origin
    owner.wait_for_receipt(owner.register_log(origin, b"\x42" * 32))
    worker = _worker(anvil, owner, ledger, tmp_path)
    ledger.append(producer.events(2), log_id=LOG)
    ledger.checkpoint(LOG)
    worker.run_once()
    [row] = ledger.anchors.for_log(LOG)
    assert row.status == "failed" and "registers another key for log" in row.error
    assert owner.latest(log_id_for_origin(origin))[0] == 0


def test_a_non_owner_cannot_anchor_an_unregistered_log(anvil, owner, ledger, producer, tmp_path, account_client):
    other = account_client(3, owner.contract_address)
    owner.wait_for_receipt(owner.authorize(other.address))
    worker = _worker(anvil, owner, ledger, tmp_path, key_index=3, max_attempts=2)
    ledger.append(producer.events(2), log_id=LOG)
    ledger.checkpoint(LOG)
    assert "LogNotRegistered" in worker.run_once().errors[0]
    worker.run_once()
    [row] = ledger.anchors.for_log(LOG)
    assert row.status == "failed" and row.attempts == 2 and "LogNotRegistered" in row.error
