"""The independent verifier alone (no builder code) on receipt proofs made elsewhere: a real Cancun
mainnet block's header and a receipt-trie proof produced by another client's tooling (a16z/helios
test data, provenance in tests/fixtures/chains/README.md). The header is RLP-encoded here field by
field with the verifier's own RLP, the proof walked by rlhf_verifier.mpt, and the proven receipt
decoded by rlhf_verifier.evidence.decode_receipt and compared with what the node reported."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rlhf_verifier.evidence import EvidenceError, decode_receipt, verify_receipt_inclusion
from rlhf_verifier.rlp import encode, keccak256

CHAINS = Path(__file__).resolve().parents[1] / "fixtures" / "chains"
HEADER = json.loads((CHAINS / "mainnet_21925176_cancun_header.json").read_text())
PROOF = json.loads((CHAINS / "mainnet_21925176_cancun_receipt_proof.json").read_text())

# Cancun header fields in consensus order (the verifier reads them by position; listed here to
# encode the fixture's JSON without the builder).
CANCUN_FIELDS = ("parentHash", "sha3Uncles", "miner", "stateRoot", "transactionsRoot", "receiptsRoot", "logsBloom",
                 "difficulty", "number", "gasLimit", "gasUsed", "timestamp", "extraData", "mixHash", "nonce",
                 "baseFeePerGas", "withdrawalsRoot", "blobGasUsed", "excessBlobGas", "parentBeaconBlockRoot")
QUANTITIES = {"difficulty", "number", "gasLimit", "gasUsed", "timestamp", "baseFeePerGas", "blobGasUsed", "excessBlobGas"}


def _field(name: str) -> bytes:
    value = HEADER[name]
    if name in QUANTITIES:
        n = int(value, 16)
        return n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes.fromhex(value[2:])


def _inputs() -> tuple[bytes, bytes, int, int, list[bytes]]:
    header = encode([_field(n) for n in CANCUN_FIELDS])
    receipt = PROOF["receipt"]
    proof = [bytes.fromhex(n[2:]) for n in PROOF["receiptProof"]]
    return bytes.fromhex(HEADER["hash"][2:]), header, int(HEADER["number"], 16), int(receipt["transactionIndex"], 16), proof


def _proven_receipt() -> bytes:
    from rlhf_verifier.mpt import verify_proof

    block_hash, header, _number, index, proof = _inputs()
    assert keccak256(header) == block_hash  # the published block hash of mainnet 21925176
    return verify_proof(bytes.fromhex(HEADER["receiptsRoot"][2:]), encode(index.to_bytes((index.bit_length() + 7) // 8, "big")), proof)


def test_a_proof_made_elsewhere_proves_the_receipt_the_node_reported():
    block_hash, header, number, index, proof = _inputs()
    value = _proven_receipt()
    h = verify_receipt_inclusion(block_hash, header, number, index, value, proof)
    assert (h.number, h.receipts_root.hex()) == (21925176, HEADER["receiptsRoot"][2:])
    tx_type, status, logs = decode_receipt(value)
    reported = PROOF["receipt"]
    assert (tx_type, status) == (int(reported["type"], 16), int(reported["status"], 16))
    assert [("0x" + lg.address.hex(), ["0x" + t.hex() for t in lg.topics], "0x" + lg.data.hex()) for lg in logs] == [
        (lg["address"], lg["topics"], lg["data"]) for lg in reported["logs"]]


@pytest.mark.parametrize("attack,message", [
    (lambda h, n, i, v, p: (h, n, i + 1, v, p), "receipt-trie proof fails"),        # another index
    (lambda h, n, i, v, p: (h, n + 1, i, v, p), "!= block_number 21925177"),        # another height
    (lambda h, n, i, v, p: (h, n, i, v, p[:-1]), "receipt-trie proof fails"),       # proof cut short
    (lambda h, n, i, v, p: (h, n, i, v[:-1] + bytes([v[-1] ^ 1]), p), "proves a different receipt"),  # changed
])
def test_the_verifier_refuses_a_changed_claim_about_that_receipt(attack, message):
    block_hash, header, number, index, proof = _inputs()
    value = _proven_receipt()
    h, n, i, v, p = attack(header, number, index, value, proof)
    with pytest.raises(EvidenceError, match=message):
        verify_receipt_inclusion(block_hash, h, n, i, v, p)
