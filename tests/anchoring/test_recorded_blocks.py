"""Real blocks taken end to end through the evidence builder's whole path, over HTTP: the real
ChainClient asks EmulatedRecordedRpc (an EMULATED node answering recorded JSON-RPC answers of a
real public block, tests/anchoring/recorded_rpc.py) for the block, its header and its receipts;
prove_receipt() rebuilds the published receiptsRoot and proves the receipt of a real log; the
independent verifier (rlhf_verifier) then checks the header hash and the proof on its own.

The blocks (provenance in tests/fixtures/chains/README.md):
- Ethereum mainnet 483920 (Frontier), the recorded eth_getBlockByNumber / eth_getBlockReceipts /
  eth_getTransactionReceipt answers of blockchain-etl/ethereum-etl, verbatim;
- Unichain Sepolia 35535698, an OP Stack block after Canyon (Isthmus header, 21 fields) whose
  first receipt is a deposit with depositNonce and depositReceiptVersion.

The Anchored-event layer (build_evidence) is exercised on anvil in test_evidence.py and
test_worker*.py; here it must refuse these real receipts, which hold no Anchored event."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import rlp
from eth_utils import keccak, to_checksum_address

from rlhf_ledger.anchoring.chain import ChainClient, ChainError
from rlhf_ledger.anchoring.evidence import EvidenceError, build_evidence, prove_receipt, receipt_rlp, verify_mpt_proof
from rlhf_verifier import evidence as vev
from tests.anchoring.conftest import FAST_RETRY
from tests.anchoring.recorded_rpc import EmulatedRecordedRpc

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "chains"
READ_ONLY_KEY = "0x" + "42" * 32  # reads only: nothing is signed or sent


def _load(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / name).read_text())


FRONTIER = _load("mainnet_483920_frontier_recorded_rpc.json")
UNICHAIN = _load("unichain_sepolia_35535698_block.json")


def frontier_node(**kw: Any) -> EmulatedRecordedRpc:
    return EmulatedRecordedRpc(chain_id=FRONTIER["chain_id"], block=FRONTIER["eth_getBlockByNumber_full"],
                               block_receipts=FRONTIER["eth_getBlockReceipts"],
                               tx_receipts=FRONTIER["eth_getTransactionReceipt"], **kw)


def unichain_node(**kw: Any) -> EmulatedRecordedRpc:
    return EmulatedRecordedRpc(chain_id=UNICHAIN["chain_id"], block=UNICHAIN["eth_getBlockByHash"],
                               block_receipts=kw.pop("block_receipts", UNICHAIN["eth_getBlockReceipts"]), **kw)


def client(node: EmulatedRecordedRpc) -> ChainClient:
    return ChainClient(node.url, READ_ONLY_KEY, retry=FAST_RETRY)


def verifier_checks(inclusion: Any, block_hash: str) -> vev.BlockHeader:
    """The separate verifier's check of what the builder produced, from bytes alone."""
    header = vev.verify_receipt_inclusion(bytes.fromhex(block_hash[2:]), inclusion.header,
                                          int(inclusion.block["number"], 16), inclusion.tx_index,
                                          inclusion.receipt, inclusion.proof)
    assert "0x" + header.receipts_root.hex() == inclusion.block["receiptsRoot"]
    assert verify_mpt_proof(header.receipts_root, rlp.encode(inclusion.tx_index), inclusion.proof) == inclusion.receipt
    return header


# -- Ethereum mainnet 483920 (Frontier): verbatim recorded answers ------------------------------

TRANSFER = "0xddf252ad1be2c89b69c2b068fc378daa952ba7f163c4a11628f55a4df523b3ef"


@pytest.mark.parametrize("tx_index", [0, 1])  # the block's two real ERC-20 Transfer logs
def test_a_real_mainnet_block_end_to_end_over_http_proves_a_real_log(tx_index):
    block = FRONTIER["eth_getBlockByNumber_full"]
    tx_hash = block["transactions"][tx_index]["hash"]
    with frontier_node() as node:
        inclusion = prove_receipt(client(node), block["hash"], tx_index, tx_hash=tx_hash)
        # no debug_getRawHeader on this node: the header was rebuilt from the field list, then hashed
        assert [m for m in node.calls if m != "eth_chainId"] == [
            "eth_getBlockByHash", "debug_getRawHeader", "eth_getBlockReceipts"]
    assert "0x" + keccak(inclusion.header).hex() == block["hash"] == "0x246edb4b351d93c27926f4649bcf6c24366e2a7c7c718dc9158eea20c03bc6ae"
    # the recorded eth_getBlockReceipts answer lists the receipts out of order; the trie uses the block's
    assert [r["transactionHash"] for r in inclusion.receipts] == [t["hash"] for t in block["transactions"]]
    header = verifier_checks(inclusion, block["hash"])
    assert header.number == 483920 and header.timestamp == int(block["timestamp"], 16)
    # The proven receipt holds the recorded log: [root (pre-Byzantium), gas, bloom, [[address, topics, data]]]
    root_field, _gas, _bloom, logs = rlp.decode(inclusion.receipt)
    recorded = FRONTIER["eth_getTransactionReceipt"][tx_hash]
    assert "0x" + root_field.hex() == recorded["root"] and len(root_field) == 32
    [(address, topics, data)] = logs
    [log] = recorded["logs"]
    assert ("0x" + address.hex(), ["0x" + t.hex() for t in topics], "0x" + data.hex()) == (
        log["address"], log["topics"], log["data"])
    assert topics[0].hex() == TRANSFER[2:]


def test_anchor_evidence_is_refused_on_a_pre_byzantium_receipt_on_both_sides():
    """A real receipt proven in a real block is still no anchor: it has a state root, not a
    status (so "success" cannot be read), and no Anchored event."""
    block = FRONTIER["eth_getBlockByNumber_full"]
    tx_hash = block["transactions"][0]["hash"]
    with frontier_node() as node:
        c = client(node)
        with pytest.raises(ChainError) as e:
            build_evidence(c, tx_hash, contract="0xf4eced2f682ce333f96f2d8966c613ded8fc95dd")
        inclusion = prove_receipt(c, block["hash"], 0, tx_hash=tx_hash)
    assert str(e.value).endswith("eth_getTransactionReceipt: status = 'None' is not a 0x-hex quantity")
    with pytest.raises(vev.EvidenceError, match="receipt has a pre-Byzantium state root, not a status"):
        vev.decode_receipt(inclusion.receipt)


def test_without_eth_get_block_receipts_a_pre_byzantium_receipt_is_one_clear_error():
    """The per-transaction fallback reads eth_getTransactionReceipt through the client, which
    requires a status (anchoring never meets a pre-Byzantium chain): refused by name, no traceback."""
    block = FRONTIER["eth_getBlockByNumber_full"]
    with EmulatedRecordedRpc(chain_id=1, block=block, block_receipts=None,
                             tx_receipts=FRONTIER["eth_getTransactionReceipt"]) as node:
        with pytest.raises(ChainError) as e:
            prove_receipt(client(node), block["hash"], 0)
    assert str(e.value).endswith("eth_getTransactionReceipt: status = 'None' is not a 0x-hex quantity")
    assert "\n" not in str(e.value)


# -- Unichain Sepolia 35535698: OP Stack after Canyon ---------------------------------------------

@pytest.mark.parametrize("block_receipts", [True, False], ids=["eth_getBlockReceipts", "per-transaction"])
def test_an_op_stack_block_after_canyon_end_to_end_proves_its_deposit_and_a_real_log(block_receipts):
    block = UNICHAIN["eth_getBlockByHash"]
    kw = {} if block_receipts else {"block_receipts": None,
                                    "tx_receipts": {r["transactionHash"]: r for r in UNICHAIN["eth_getBlockReceipts"]}}
    with unichain_node(**kw) as node:
        c = client(node)
        deposit = prove_receipt(c, block["hash"], 0, tx_hash=block["transactions"][0])
        logged = prove_receipt(c, block["hash"], 2, tx_hash=block["transactions"][2])
        # without eth_getBlockReceipts: tried once, remembered, then one receipt call per transaction
        assert node.calls.count("eth_getBlockReceipts") == (2 if block_receipts else 1)
        assert node.calls.count("eth_getTransactionReceipt") == (0 if block_receipts else 2 * 6)
    assert "0x" + keccak(deposit.header).hex() == block["hash"]
    assert len(rlp.decode(deposit.header)) == 21  # Isthmus: requestsHash

    # The deposit: Canyon trie value carries depositNonce and depositReceiptVersion.
    verifier_checks(deposit, block["hash"])
    assert deposit.receipt[0] == 0x7E
    items = rlp.decode(deposit.receipt[1:])
    assert len(items) == 6 and int.from_bytes(items[4], "big") == 35535698 and items[5] == b"\x01"
    assert vev.decode_receipt(deposit.receipt)[:2] == (0x7E, 1)

    # A real log (a counter contract's event) in an EIP-1559 receipt, read back by the verifier.
    verifier_checks(logged, block["hash"])
    tx_type, status, logs = vev.decode_receipt(logged.receipt)
    [recorded] = UNICHAIN["eth_getBlockReceipts"][2]["logs"]
    assert (tx_type, status) == (2, 1)
    assert ("0x" + logs[0].address.hex(), ["0x" + t.hex() for t in logs[0].topics], "0x" + logs[0].data.hex()) == (
        recorded["address"], recorded["topics"], recorded["data"])


def test_build_evidence_on_the_real_op_block_refuses_a_log_that_is_not_anchored():
    block = UNICHAIN["eth_getBlockByHash"]
    emitter = to_checksum_address(UNICHAIN["eth_getBlockReceipts"][2]["logs"][0]["address"])
    with unichain_node() as node:
        with pytest.raises(EvidenceError) as e:
            build_evidence(client(node), block["transactions"][2], contract=emitter)
    assert str(e.value).endswith(f"expected exactly one Anchored log of {emitter}, found 0")


# -- a lying node: every tampered answer is refused with its reason -----------------------------

def test_a_changed_receipt_no_longer_rebuilds_the_published_root():
    block = UNICHAIN["eth_getBlockByHash"]
    with unichain_node() as node:
        node.block_receipts[3]["logs"][0]["data"] = "0x" + "00" * 31 + "01"  # one log's data changed
        with pytest.raises(EvidenceError) as e:
            prove_receipt(client(node), block["hash"], 2)
    assert f"!= header receiptsRoot {block['receiptsRoot']} (6 receipts of types ['0x2', '0x7e'])" in str(e.value)


def test_a_deposit_reported_without_its_canyon_fields_is_refused():
    """The issue's bug, on a real block: dropping depositNonce/depositReceiptVersion changes the
    trie value, so the published root is not rebuilt and no evidence is made."""
    block = UNICHAIN["eth_getBlockByHash"]
    with unichain_node() as node:
        del node.block_receipts[0]["depositReceiptVersion"]
        with pytest.raises(EvidenceError, match=r"rebuilt receipt trie root 0x[0-9a-f]{64} != header receiptsRoot"):
            prove_receipt(client(node), block["hash"], 0)


def test_a_changed_header_field_or_raw_header_is_refused():
    block = UNICHAIN["eth_getBlockByHash"]
    with unichain_node() as node:
        node.block["gasUsed"] = "0x32139"
        with pytest.raises(EvidenceError) as e:
            prove_receipt(client(node), block["hash"], 0)
    assert "the header rebuilt from its 21 fields hashes to 0x" in str(e.value)
    assert f"not the block hash {block['hash']}" in str(e.value)
    with unichain_node(raw_header="0x" + "c0") as node:  # a raw header that is not the block's
        with pytest.raises(EvidenceError, match="debug_getRawHeader: keccak of the raw header is 0x"):
            prove_receipt(client(node), block["hash"], 0)


def test_an_index_outside_the_block_and_a_receipt_of_another_transaction_are_refused():
    block = UNICHAIN["eth_getBlockByHash"]
    with unichain_node() as node:
        c = client(node)
        with pytest.raises(EvidenceError, match="transactionIndex 6 is outside the block's 6 transactions"):
            prove_receipt(c, block["hash"], 6)
        with pytest.raises(EvidenceError, match=f"receipt at index 1 is for {block['transactions'][1]}"):
            prove_receipt(c, block["hash"], 1, tx_hash=block["transactions"][2])


def test_the_verifier_refuses_a_proof_for_another_index_or_block():
    block = UNICHAIN["eth_getBlockByHash"]
    with unichain_node() as node:
        inclusion = prove_receipt(client(node), block["hash"], 2)
    bhash = bytes.fromhex(block["hash"][2:])
    number = int(block["number"], 16)
    with pytest.raises(vev.EvidenceError, match="receipt-trie proof fails"):
        vev.verify_receipt_inclusion(bhash, inclusion.header, number, 3, inclusion.receipt, inclusion.proof)
    with pytest.raises(vev.EvidenceError, match="block header hashes to 0x"):
        vev.verify_receipt_inclusion(b"\x11" * 32, inclusion.header, number, 2, inclusion.receipt, inclusion.proof)
    other = receipt_rlp(UNICHAIN["eth_getBlockReceipts"][3])
    with pytest.raises(vev.EvidenceError, match="proves a different receipt than receipt_rlp"):
        vev.verify_receipt_inclusion(bhash, inclusion.header, number, 2, other, inclusion.proof)
