"""The contract enforces append-only history (issue 12, items 1 and 3; docs/contract.md) on a
real anvil: logs are registered with their key, and a new root needs an RFC 9162 consistency
proof from the anchored one, checked on chain with the SHA-256 precompile. The proofs come
from the ledger's own Merkle code; every attack is a revert with the contract's reason."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rlhf_ledger.anchoring.chain import ChainClient, ContractRevert, log_id_for_origin
from rlhf_ledger.core.merkle import InMemoryTree
from tests.anchoring.simlog import LOG_KEY, SimLog, synthetic_consistency

CID = "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"


def test_an_unregistered_log_cannot_be_anchored(owner: ChainClient) -> None:
    log_id = log_id_for_origin("example.org/unregistered")
    with pytest.raises(ContractRevert) as e:
        owner.anchor(log_id, 1, b"\x01" * 32, CID)
    assert e.value.error_name == "LogNotRegistered" and e.value.error_args == (log_id,)


def test_registration_records_origin_and_key_once(owner: ChainClient, account_client) -> None:  # type: ignore[no-untyped-def]
    origin = "example.org/registered"
    log_id = log_id_for_origin(origin)
    assert owner.log_key(log_id) is None
    other = account_client(1, owner.contract_address)
    with pytest.raises(ContractRevert, match="NotOwner"):
        other.register_log(origin, LOG_KEY)
    with pytest.raises(ContractRevert) as e:
        owner.register_log(origin, bytes(32))
    assert e.value.error_name == "ZeroKey"
    fn = owner.contract.functions.registerLog(log_id_for_origin("example.org/other"), origin, LOG_KEY)
    with pytest.raises(ContractRevert) as e:
        owner.send(owner.contract_address, fn._encode_transaction_data(), what="registerLog")
    assert e.value.error_name == "LogIdMismatch"
    rcpt = owner.wait_for_receipt(owner.register_log(origin, LOG_KEY))
    (ev,) = owner.contract.events.LogRegistered().process_receipt(owner.w3.eth.get_transaction_receipt(rcpt["transactionHash"]))
    assert ev["args"]["logId"] == log_id and ev["args"]["origin"] == origin and ev["args"]["publicKey"] == LOG_KEY
    assert owner.log_key(log_id) == LOG_KEY
    with pytest.raises(ContractRevert) as e:
        owner.register_log(origin, LOG_KEY)
    assert e.value.error_name == "LogAlreadyRegistered"


def test_key_rotation_is_an_event_that_names_the_size_it_starts_after(owner: ChainClient, account_client) -> None:  # type: ignore[no-untyped-def]
    log = SimLog("example.org/rotating")
    with pytest.raises(ContractRevert, match="LogNotRegistered"):
        owner.rotate_log_key(log.log_id, b"\x07" * 32)
    log.register(owner)
    owner.wait_for_receipt(log.anchor(owner, 5, CID))
    with pytest.raises(ContractRevert, match="NotOwner"):
        account_client(2, owner.contract_address).rotate_log_key(log.log_id, b"\x07" * 32)
    new_key = hashlib.sha256(b"new key").digest()
    rcpt = owner.wait_for_receipt(owner.rotate_log_key(log.log_id, new_key))
    (ev,) = owner.contract.events.LogKeyRotated().process_receipt(owner.w3.eth.get_transaction_receipt(rcpt["transactionHash"]))
    assert ev["args"]["publicKey"] == new_key and ev["args"]["fromSize"] == 5
    assert owner.log_key(log.log_id) == new_key


def test_a_first_anchor_takes_no_proof(owner: ChainClient) -> None:
    log = SimLog("example.org/first-with-proof")
    log.register(owner)
    with pytest.raises(ContractRevert) as e:
        owner.anchor(log.log_id, 3, log.root(3), CID, [b"\x01" * 32])
    assert e.value.error_name == "UnexpectedProof"


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(m=st.integers(1, 200), extra=st.integers(1, 200))
def test_ledger_proofs_are_accepted_for_random_sizes(owner: ChainClient, m: int, extra: int) -> None:
    log = SimLog(f"example.org/random-{m}-{extra}-{owner.contract_address[-6:]}")
    if owner.log_key(log.log_id) is None:
        log.register(owner)
    if owner.latest(log.log_id)[0]:
        return  # hypothesis repeated an example on this contract
    owner.wait_for_receipt(log.anchor(owner, m, CID))
    owner.wait_for_receipt(log.anchor(owner, m + extra, CID))
    assert owner.latest(log.log_id) == (m + extra, log.root(m + extra))


@pytest.mark.parametrize("m, n", [(6, 13), (4, 9), (1, 2), (7, 8), (37, 1000)])
def test_every_single_hash_mutation_of_a_proof_reverts(owner: ChainClient, m: int, n: int) -> None:
    log = SimLog(f"example.org/mutate-{m}-{n}")
    log.register(owner)
    owner.wait_for_receipt(log.anchor(owner, m, CID))
    proof, root = log.proof(n), log.root(n)
    bad_proofs = []
    for i in range(len(proof)):
        for bit in (0, 255):
            h = bytearray(proof[i])
            h[bit // 8] ^= 1 << (bit % 8)
            bad_proofs.append(proof[:i] + [bytes(h)] + proof[i + 1:])
    bad_proofs += [proof[:-1], proof + [b"\x00" * 32], list(reversed(proof)) if len(proof) > 1 else [b"\x01" * 32]]
    for bad in bad_proofs:
        with pytest.raises(ContractRevert) as e:
            owner.anchor(log.log_id, n, root, CID, bad)
        assert e.value.error_name == "InconsistentProof" and e.value.error_args == (log.log_id, m, n)
    # a root one bit off with the right proof, and the right proof for other sizes
    with pytest.raises(ContractRevert, match="InconsistentProof"):
        owner.anchor(log.log_id, n, bytes([root[0] ^ 1]) + root[1:], CID, proof)
    other = InMemoryTree()
    other.extend([b"%s entry %d" % (log.origin.encode(), i) for i in range(n + 1)])
    for a, b in ((m + 1, n), (m, n + 1)):
        if a < b:
            with pytest.raises(ContractRevert, match="InconsistentProof"):
                owner.anchor(log.log_id, n, root, CID, other.consistency_proof(a, b))
    owner.wait_for_receipt(owner.anchor(log.log_id, n, root, CID, proof))  # the honest proof still goes through


def test_an_equivocating_history_is_refused(owner: ChainClient) -> None:
    """A second history that shares no prefix with the anchored one, with a proof that is valid
    within that second history: the chain refuses it (equivocation needs no verifier to spot)."""
    log = SimLog("example.org/equivocate")
    log.register(owner)
    owner.wait_for_receipt(log.anchor(owner, 10, CID))
    fork = InMemoryTree()
    fork.extend([b"forged %d" % i for i in range(20)])
    with pytest.raises(ContractRevert) as e:
        owner.anchor(log.log_id, 20, fork.root(20), CID, fork.consistency_proof(10, 20))
    assert e.value.error_name == "InconsistentProof" and e.value.error_args == (log.log_id, 10, 20)
    assert owner.latest(log.log_id) == (10, log.root(10))


def test_synthetic_proofs_at_2_pow_40_verify_on_chain(owner: ChainClient) -> None:
    log_id = log_id_for_origin("example.org/huge")
    owner.wait_for_receipt(owner.register_log("example.org/huge", LOG_KEY))
    m, n = 2**40 - 12_345, 2**40
    root_m, root_n, proof = synthetic_consistency(m, n)
    owner.wait_for_receipt(owner.anchor(log_id, m, root_m, CID))
    owner.wait_for_receipt(owner.anchor(log_id, n, root_n, CID, proof))
    assert owner.latest(log_id) == (n, root_n)
