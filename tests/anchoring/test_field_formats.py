"""Real chains' formats, offline: public block headers and OP Stack deposit receipts from the
fixtures in tests/fixtures/chains (provenance in its README), every receipt type a chain puts in
a block, header field handling, and node answers validated with one-line errors.

Where a block is made up here (a trie of real deposit receipts beside typed ones), it is said so;
the headers are real and hash to their published block hashes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import rlp
from eth_utils import keccak, to_checksum_address

from rlhf_ledger.anchoring.chain import ChainClient, ChainError, RPCError
from rlhf_ledger.anchoring.evidence import (
    ANCHORED_TOPIC,
    EvidenceError,
    build_evidence,
    build_receipt_trie,
    header_rlp,
    receipt_rlp,
    trie_proof,
    verify_evidence,
    verify_mpt_proof,
)
from rlhf_verifier import evidence as vev
from rlhf_verifier.mpt import verify_proof

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "chains"
HEADERS = sorted(FIXTURES.glob("*_header.json"))
KEY = "0x" + "11" * 32


def _load(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text())


# -- real headers ---------------------------------------------------------------------------------

@pytest.mark.parametrize("path", HEADERS, ids=[p.stem for p in HEADERS])
def test_real_headers_hash_to_their_published_block_hash_on_both_sides(path):
    block = json.loads(path.read_text())
    raw = header_rlp(block)
    assert "0x" + keccak(raw).hex() == block["hash"]
    # The separate verifier reads fields by position, whatever fork the header is from.
    h = vev.decode_header(raw)
    assert h.hash.hex() == block["hash"][2:]
    assert h.number == int(block["number"], 16) and h.timestamp == int(block["timestamp"], 16)
    assert "0x" + h.receipts_root.hex() == block["receiptsRoot"]


# Ethereum mainnet header fixtures by fork: (block number, header field count). Forks that changed
# no header field share a layout with their neighbours (README: which named forks have no block).
MAINNET_FORKS = {
    "frontier": (483920, 15), "homestead": (1150000, 15), "byzantium": (7000000, 15),
    "london": (12965000, 16), "arrowglacier": (14764013, 16), "grayglacier": (15537393, 16),
    "paris": (15537394, 16), "shanghai": (17034870, 17), "cancun": (19463337, 20), "prague": (24630100, 21),
}


@pytest.mark.parametrize("fork", MAINNET_FORKS)
def test_mainnet_fixtures_cover_each_fork_up_to_prague(fork):
    number, n_fields = MAINNET_FORKS[fork]
    [path] = FIXTURES.glob(f"mainnet_{number}_{fork}_header.json")
    block = json.loads(path.read_text())
    assert int(block["number"], 16) == number and len(rlp.decode(header_rlp(block))) == n_fields
    assert (block["difficulty"] == "0x0") is (number >= 15537394)  # proof of stake from Paris on


def test_fixtures_are_small_and_include_op_stack_and_arbitrum_headers():
    headers = {int(json.loads(p.read_text())["number"], 16): json.loads(p.read_text()) for p in HEADERS}
    op = headers[157796868]  # OP Mainnet after Isthmus: withdrawalsRoot is the L2 message passer root
    assert op["miner"] == "0x4200000000000000000000000000000000000011" and len(rlp.decode(header_rlp(op))) == 21
    arb = headers[350791066]  # Arbitrum One: 16 fields; sendRoot/sendCount/l1BlockNumber live in extraData/mixHash
    assert len(rlp.decode(header_rlp(arb))) == 16 and arb["miner"] == "0xa4b000000000000000000073657175656e636572"
    mix = bytes.fromhex(arb["mixHash"][2:])
    assert arb["extraData"] == arb["sendRoot"] and int.from_bytes(mix[0:8], "big") == int(arb["sendCount"], 16)
    assert int.from_bytes(mix[8:16], "big") == int(arb["l1BlockNumber"], 16)
    assert all(p.stat().st_size < 20_000 for p in FIXTURES.iterdir())  # small fixtures only


def test_a_changed_header_field_no_longer_hashes():
    block = _load("mainnet_17034870_shanghai_header.json")
    block["receiptsRoot"] = "0x" + "00" * 32
    assert "0x" + keccak(header_rlp(block)).hex() != block["hash"]


def test_unknown_header_field_is_refused_by_name_and_chain():
    block = _load("mainnet_17034870_shanghai_header.json")
    block["extDataHash"] = "0x" + "00" * 32  # Avalanche C-Chain puts this mid-header
    with pytest.raises(EvidenceError) as e:
        header_rlp(block, chain="chain 43114")
    assert str(e.value).startswith("chain 43114 block 0xe22c56f2")
    assert "header field(s) extDataHash this builder cannot place on chain 43114" in str(e.value)


def test_a_later_field_without_the_earlier_one_is_refused():
    block = _load("mainnet_15537394_paris_header.json")
    block["requestsHash"] = "0x" + "00" * 32
    with pytest.raises(EvidenceError, match="header has requestsHash but not the earlier field withdrawalsRoot"):
        header_rlp(block)


def test_amsterdam_block_access_list_hash_is_appended_after_requests_hash():
    block = _load("mainnet_17034870_shanghai_header.json")
    block.update(blobGasUsed="0x0", excessBlobGas="0x0", parentBeaconBlockRoot=KEY, requestsHash=KEY,
                 blockAccessListHash="0x" + "22" * 32)
    fields = rlp.decode(header_rlp(block))
    assert len(fields) == 22 and fields[21] == b"\x22" * 32 and fields[20] == b"\x11" * 32


@pytest.mark.parametrize("field,value,message", [
    ("number", "12", "eth_getBlockByHash: number = '12' is not a 0x-hex quantity"),
    ("receiptsRoot", "0x1234", "eth_getBlockByHash: receiptsRoot = '0x1234' must be 32 bytes, got 2"),
    ("extraData", "0xabc", "eth_getBlockByHash: extraData = '0xabc' is not 0x-hex data"),
])
def test_malformed_header_field_names_method_field_and_value(field, value, message):
    block = _load("mainnet_15537394_paris_header.json")
    block[field] = value
    with pytest.raises(EvidenceError) as e:
        header_rlp(block)
    assert message in str(e.value)


# -- OP Stack deposit receipts (real encodings) ---------------------------------------------------

def _receipt_json(network_rlp: str) -> dict[str, Any]:
    """The JSON-RPC receipt a node reports for a consensus-encoded receipt."""
    raw = bytes.fromhex(network_rlp[2:])
    tx_type, body = (raw[0], raw[1:]) if raw[0] < 0x80 else (0, raw)
    items = rlp.decode(body)
    out: dict[str, Any] = {
        "type": hex(tx_type), "status": hex(int.from_bytes(items[0], "big")),
        "cumulativeGasUsed": hex(int.from_bytes(items[1], "big")), "logsBloom": "0x" + items[2].hex(),
        "logs": [{"address": "0x" + a.hex(), "topics": ["0x" + t.hex() for t in ts], "data": "0x" + d.hex()}
                 for a, ts, d in items[3]],
    }
    if len(items) > 4:
        out["depositNonce"] = hex(int.from_bytes(items[4], "big"))
    if len(items) > 5:
        out["depositReceiptVersion"] = hex(int.from_bytes(items[5], "big"))
    return out


DEPOSITS = _load("op_deposit_receipts.json")["cases"]


@pytest.mark.parametrize("case", DEPOSITS, ids=[c["name"] for c in DEPOSITS])
def test_deposit_receipts_encode_as_op_geth_puts_them_in_the_trie(case):
    receipt = _receipt_json(case["network_rlp"])
    encoded = receipt_rlp(receipt)
    network = bytes.fromhex(case["network_rlp"][2:])
    if case["nonce_in_trie"]:  # since Canyon: [status, gas, bloom, logs, depositNonce, version]
        assert encoded == network and receipt["depositReceiptVersion"] == "0x1"
        assert len(rlp.decode(encoded[1:])) == 6
    elif network[0] == 0x7E:  # Regolith: depositNonce is reported but is not in the trie encoding
        assert "depositNonce" in receipt and len(rlp.decode(encoded[1:])) == 4
        assert encoded == b"\x7e" + rlp.encode(rlp.decode(network[1:])[:4])
    else:
        assert encoded == network  # a legacy receipt on an OP Stack chain


def test_canyon_receipt_without_its_nonce_is_the_old_bug():
    """The issue's bug: dropping depositNonce/depositReceiptVersion changes the trie value."""
    [canyon] = [c for c in DEPOSITS if c["nonce_in_trie"]]
    receipt = _receipt_json(canyon["network_rlp"])
    stripped = {k: v for k, v in receipt.items() if k not in ("depositNonce", "depositReceiptVersion")}
    assert receipt_rlp(stripped) != receipt_rlp(receipt)
    receipt.pop("depositNonce")
    with pytest.raises(EvidenceError, match="eth_getBlockReceipts: answer has no depositNonce"):
        receipt_rlp(receipt)


def test_a_real_op_stack_block_reproduces_its_receipts_root_and_proves_its_deposit():
    """All five receipts of an OP Stack block (Regolith: the deposit's nonce is reported but is not
    in the trie value) rebuild the published receiptsRoot; both verifiers prove each receipt."""
    fixture = _load("op_regolith_block_receipts.json")
    receipts = fixture["receipts"]
    assert receipts[0]["type"] == "0x7e" and "depositNonce" in receipts[0]
    encoded = [receipt_rlp(r) for r in receipts]
    t = build_receipt_trie(encoded)
    assert "0x" + t.root_hash.hex() == fixture["receiptsRoot"]
    for i in (0, 3):
        proof = trie_proof(t, rlp.encode(i))
        assert verify_mpt_proof(t.root_hash, rlp.encode(i), proof) == encoded[i]
        assert verify_proof(t.root_hash, rlp.encode(i), proof) == encoded[i]
        assert vev.decode_receipt(encoded[i])[:2] == (int(receipts[i]["type"], 16), 1)
    # Encoding the Regolith deposit as a Canyon one (nonce in the trie) misses the published root.
    wrong = [dict(receipts[0], depositReceiptVersion="0x1")] + receipts[1:]
    assert build_receipt_trie([receipt_rlp(r) for r in wrong]).root_hash != t.root_hash


def _prove_on_both_sides(root: bytes, encoded: list[bytes], indexes: Any) -> None:
    t = build_receipt_trie(encoded)
    assert t.root_hash == root
    for i in indexes:
        proof = trie_proof(t, rlp.encode(i))
        assert verify_mpt_proof(root, rlp.encode(i), proof) == encoded[i]
        assert verify_proof(root, rlp.encode(i), proof) == encoded[i]


def test_an_op_stack_block_after_canyon_rebuilds_its_receipts_root_and_proves_its_deposit():
    """Unichain Sepolia 35535698 (Isthmus): its deposit's trie value carries depositNonce and
    depositReceiptVersion; every flashblock's receipts root (the root over the receipts so far,
    published by the sequencer) is rebuilt too, so each receipt is checked on its own."""
    fixture = _load("unichain_sepolia_35535698_block.json")
    block, receipts = fixture["eth_getBlockByHash"], fixture["eth_getBlockReceipts"]
    assert "0x" + keccak(header_rlp(block)).hex() == block["hash"]
    assert vev.decode_header(header_rlp(block)).receipts_root.hex() == block["receiptsRoot"][2:]
    encoded = [receipt_rlp(r) for r in receipts]
    assert receipts[0]["type"] == "0x7e" and len(rlp.decode(encoded[0][1:])) == 6
    _prove_on_both_sides(bytes.fromhex(block["receiptsRoot"][2:]), encoded, range(len(encoded)))
    count = 0
    for n, root in zip(fixture["flashblock_tx_counts"], fixture["flashblock_receipts_roots"], strict=True):
        count += n
        assert "0x" + build_receipt_trie(encoded[:count]).root_hash.hex() == root
    assert vev.decode_receipt(encoded[0])[:2] == (0x7E, 1)
    # Encoded as before Canyon (nonce and version left out), the deposit misses the published root.
    regolith = [b"\x7e" + rlp.encode(rlp.decode(encoded[0][1:])[:4])] + encoded[1:]
    assert "0x" + build_receipt_trie(regolith).root_hash.hex() != block["receiptsRoot"]


def test_a_cancun_mainnet_block_rebuilds_its_receipts_root_from_all_its_receipts():
    """Mainnet 19463337 (Cancun, 8 receipts, consensus encodings from the Portal network's test
    data): the builder's JSON encoding reproduces each one, and both verifiers prove each."""
    fixture = _load("mainnet_19463337_cancun_receipts.json")
    header = _load("mainnet_19463337_cancun_header.json")
    assert fixture["block_hash"] == header["hash"] == "0x" + keccak(header_rlp(header)).hex()
    encoded = [bytes.fromhex(r[2:]) for r in fixture["receipts"]]
    for raw in encoded:  # what a node would report, re-encoded by the builder byte for byte
        assert receipt_rlp(_receipt_json("0x" + raw.hex())) == raw
    assert {raw[0] for raw in encoded} == {0x02, 0xF9}  # EIP-1559 and legacy receipts
    _prove_on_both_sides(bytes.fromhex(header["receiptsRoot"][2:]), encoded, range(len(encoded)))


def test_a_cancun_mainnet_receipt_is_proven_against_its_published_header():
    """Mainnet 21925176 (Cancun): a node's receipt JSON and its receipt-trie proof (a16z/helios test
    data); the builder's encoding of the JSON is exactly the value both verifiers reach."""
    fixture = _load("mainnet_21925176_cancun_receipt_proof.json")
    header = _load("mainnet_21925176_cancun_header.json")
    receipt = fixture["receipt"]
    assert receipt["blockHash"] == header["hash"] == "0x" + keccak(header_rlp(header)).hex()
    root = vev.decode_header(header_rlp(header)).receipts_root
    key = rlp.encode(int(receipt["transactionIndex"], 16))
    proof = [bytes.fromhex(n[2:]) for n in fixture["receiptProof"]]
    assert verify_mpt_proof(root, key, proof) == verify_proof(root, key, proof) == receipt_rlp(receipt)
    assert vev.decode_receipt(receipt_rlp(receipt))[:2] == (2, 1)
    changed = dict(receipt, cumulativeGasUsed=hex(int(receipt["cumulativeGasUsed"], 16) + 1))
    assert receipt_rlp(changed) != verify_proof(root, key, proof)


def test_a_frontier_block_rebuilds_its_receipts_root_with_state_root_receipts():
    """Mainnet 483920: before Byzantium the receipt holds the post-state root where the status is
    now; the builder encodes it for the trie, and the anchor verifier refuses it as evidence."""
    fixture = _load("mainnet_483920_frontier_recorded_rpc.json")
    block = fixture["eth_getBlockByNumber_full"]
    receipts = sorted(fixture["eth_getBlockReceipts"], key=lambda r: int(r["transactionIndex"], 16))
    encoded = [receipt_rlp(r) for r in receipts]
    _prove_on_both_sides(bytes.fromhex(block["receiptsRoot"][2:]), encoded, range(len(encoded)))
    with pytest.raises(vev.EvidenceError, match="pre-Byzantium state root, not a status"):
        vev.decode_receipt(encoded[0])
    with pytest.raises(EvidenceError, match="eth_getBlockReceipts: root = '0x12' must be 32 bytes, got 1"):
        receipt_rlp(dict(receipts[0], root="0x12"))


# -- a block of every receipt type, made up here from real deposit receipts and typed ones --------

CONTRACT = to_checksum_address("0x" + "ab" * 20)
SUBMITTER = "0x" + "cd" * 20


def _anchored_log() -> dict[str, Any]:
    cid = b"bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"
    data = (7).to_bytes(32, "big") + b"\xa5" * 32 + (96).to_bytes(32, "big") + len(cid).to_bytes(32, "big")
    data += cid + bytes((-len(cid)) % 32)
    return {"address": CONTRACT.lower(), "topics": ["0x" + ANCHORED_TOPIC.hex(), KEY, "0x" + "00" * 12 + SUBMITTER[2:]],
            "data": "0x" + data.hex(), "logIndex": "0x0"}


def _block_with_every_type(anchor_type: int) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    receipts = [_receipt_json(c["network_rlp"]) for c in DEPOSITS]  # 0x7e (Canyon, Regolith), legacy
    gas = int(receipts[-1]["cumulativeGasUsed"], 16)
    for t in (0, 1, 2, 3, 4, 0x64):  # legacy, access list, EIP-1559, blob, set-code, Arbitrum deposit
        gas += 21000
        receipts.append({"type": hex(t), "status": "0x1", "cumulativeGasUsed": hex(gas),
                         "logsBloom": "0x" + "00" * 256, "logs": [_anchored_log()] if t == anchor_type else []})
    logs_before = 0
    for i, r in enumerate(receipts):
        r.update(transactionIndex=hex(i), transactionHash="0x" + keccak(i.to_bytes(4, "big")).hex())
        for lg in r["logs"]:
            lg["logIndex"] = hex(logs_before)
            logs_before += 1
    root = build_receipt_trie([receipt_rlp(r) for r in receipts]).root_hash
    block = _load("mainnet_17034870_shanghai_header.json")
    block["receiptsRoot"] = "0x" + root.hex()
    block["hash"] = "0x" + keccak(header_rlp(block)).hex()  # a made-up block on a real header
    block["transactions"] = [r["transactionHash"] for r in receipts]
    for r in receipts:
        r.update(blockHash=block["hash"], blockNumber=block["number"], gasUsed="0x5208")
    return block, receipts


class EmulatedNode:
    """EMULATED JSON-RPC node (not a real client): answers from one block and its receipts, so the
    builder can be run on formats no local EVM produces (OP deposits, Arbitrum types)."""

    def __init__(self, block: dict[str, Any], receipts: list[dict[str, Any]], *, raw_header: bytes | None = None,
                 block_receipts: bool = True) -> None:
        self.block_obj, self.receipts, self.raw_header = block, receipts, raw_header
        self.block_receipts = block_receipts
        self.chain_id, self.contract_address = 10, CONTRACT
        self.calls: list[str] = []

    def rpc(self, method: str, params: list[Any]) -> Any:
        self.calls.append(method)
        if method == "debug_getRawHeader":
            if self.raw_header is None:
                raise ChainError("debug_getRawHeader: the method does not exist", where="emulated")
            return "0x" + self.raw_header.hex()
        if method == "eth_getBlockReceipts":
            if not self.block_receipts:
                raise ChainError("eth_getBlockReceipts: Method not found", where="emulated")
            return self.receipts
        if method == "eth_getProof":  # a node without EIP-1186: the evidence then has no log key proof
            raise RPCError("eth_getProof", {"code": -32601, "message": "Method not found"}, where="emulated")
        raise AssertionError(method)

    def receipt(self, tx_hash: str) -> dict[str, Any] | None:
        self.calls.append("eth_getTransactionReceipt")
        return next((r for r in self.receipts if r["transactionHash"] == tx_hash), None)

    def block(self, block_hash: str) -> dict[str, Any]:
        return self.block_obj


@pytest.mark.parametrize("anchor_type", [0, 1, 2, 3, 4, 0x64])
def test_evidence_in_a_block_of_every_receipt_type_verifies_on_both_sides(anchor_type):
    block, receipts = _block_with_every_type(anchor_type)
    tx = next(r for r in receipts if r["logs"])
    ev = build_evidence(EmulatedNode(block, receipts), tx["transactionHash"])
    assert ev["receipt_rlp"][2:4] == (f"{anchor_type:02x}" if anchor_type else "f9")
    assert verify_evidence(ev, block_hash=block["hash"]).tree_size == 7
    anchor = vev.verify_evidence(ev)
    assert anchor.tree_size == 7 and anchor.block_hash.hex() == block["hash"][2:]


def test_both_verifiers_walk_proofs_to_every_receipt_including_canyon_deposits():
    block, receipts = _block_with_every_type(2)
    encoded = [receipt_rlp(r) for r in receipts]
    t = build_receipt_trie(encoded)
    for i, value in enumerate(encoded):
        proof = trie_proof(t, rlp.encode(i))
        assert verify_mpt_proof(t.root_hash, rlp.encode(i), proof) == value
        assert verify_proof(t.root_hash, rlp.encode(i), proof) == value
        tx_type, status, _ = vev.decode_receipt(value)
        assert tx_type == int(receipts[i]["type"], 16) and status == 1


def test_canyon_receipt_with_malformed_extra_items_is_refused_by_the_verifier():
    [canyon] = [c for c in DEPOSITS if c["nonce_in_trie"]]
    items = rlp.decode(bytes.fromhex(canyon["network_rlp"][4:]))
    bad = b"\x7e" + rlp.encode(items[:4] + [b"\x00\x01", b"\x01"])  # leading zero: not an integer
    with pytest.raises(vev.EvidenceError, match="depositNonce/depositReceiptVersion must be integers"):
        vev.decode_receipt(bad)
    with pytest.raises(vev.EvidenceError, match="receipt must be"):  # 6 items only for deposits
        vev.decode_receipt(b"\x02" + rlp.encode(items))


def test_raw_header_is_used_when_offered_and_checked_against_the_block_hash():
    block, receipts = _block_with_every_type(2)
    raw = header_rlp(block)
    tx = next(r for r in receipts if r["logs"])
    node = EmulatedNode(dict(block, extraFutureField="0x01"), receipts, raw_header=raw)
    ev = build_evidence(node, tx["transactionHash"])  # the unknown JSON field does not matter
    assert ev["block_header_rlp"] == "0x" + raw.hex() and "debug_getRawHeader" in node.calls
    liar = EmulatedNode(block, receipts, raw_header=raw + b"\x00")
    with pytest.raises(EvidenceError) as e:
        build_evidence(liar, tx["transactionHash"])
    assert "debug_getRawHeader: keccak of the raw header is 0x" in str(e.value)
    assert f"not the block hash {block['hash']}" in str(e.value)


def test_padded_extra_data_is_named_not_called_a_new_fork():
    block, receipts = _block_with_every_type(2)
    tx = next(r for r in receipts if r["logs"])
    padded = dict(block, extraData=block["extraData"] + "00" * 7)
    with pytest.raises(EvidenceError) as e:
        build_evidence(EmulatedNode(padded, receipts), tx["transactionHash"])
    msg = str(e.value)
    assert "hashes to 0x" in msg and "extraData of 32 bytes as reported" in msg and "fork" not in msg


def test_without_eth_get_block_receipts_receipts_are_fetched_one_by_one():
    block, receipts = _block_with_every_type(2)
    tx = next(r for r in receipts if r["logs"])
    node = EmulatedNode(block, receipts, block_receipts=False)
    ev = build_evidence(node, tx["transactionHash"])
    assert node.calls.count("eth_getTransactionReceipt") == len(receipts) + 1  # + the anchor's own lookup
    assert vev.verify_evidence(ev).tree_size == 7


@pytest.mark.parametrize("mutate,message", [
    (lambda r: r.pop("logsBloom"), "eth_getBlockReceipts: answer has no logsBloom"),
    (lambda r: r.update(cumulativeGasUsed=None), "eth_getBlockReceipts: answer has no cumulativeGasUsed"),
    (lambda r: r.update(status="0x2"), "eth_getBlockReceipts: status = '0x2' is neither 0x0 nor 0x1"),
    (lambda r: r.update(type="0x80"), "eth_getBlockReceipts: type = '0x80' is not an EIP-2718 type"),
    (lambda r: r.update(logsBloom="0x00"), "eth_getBlockReceipts: logsBloom = '0x00' must be 256 bytes, got 1"),
    (lambda r: r.pop("status"), "eth_getBlockReceipts: receipt has no status"),
])
def test_malformed_receipts_are_one_line_errors_naming_method_field_value(mutate, message):
    block, receipts = _block_with_every_type(2)
    tx = next(r for r in receipts if r["logs"])
    mutate(receipts[0])
    with pytest.raises(EvidenceError) as e:
        build_evidence(EmulatedNode(block, receipts), tx["transactionHash"])
    assert message in str(e.value) and "\n" not in str(e.value)


def test_a_missing_receipt_and_a_reordered_block_are_refused():
    block, receipts = _block_with_every_type(2)
    tx = next(r for r in receipts if r["logs"])
    with pytest.raises(EvidenceError, match="eth_getBlockReceipts: got 9 receipts for 10 transactions"):
        build_evidence(EmulatedNode(block, receipts[:-1]), tx["transactionHash"])
    swapped = [dict(r) for r in receipts]
    swapped[0]["transactionHash"], swapped[1]["transactionHash"] = receipts[1]["transactionHash"], receipts[0]["transactionHash"]
    with pytest.raises(EvidenceError, match="receipt 0 is for transaction"):
        build_evidence(EmulatedNode(block, swapped), tx["transactionHash"])


# -- node answers validated in the chain client ---------------------------------------------------

def _offline_client(answers: dict[str, Any]) -> ChainClient:
    """A ChainClient whose rpc() answers from a dict (EMULATED node answers; no network)."""
    c = ChainClient("http://127.0.0.1:9", "0x" + "01" * 32)

    def rpc(method: str, params: list[Any]) -> Any:
        answer = answers[method]
        if isinstance(answer, Exception):
            raise answer
        return answer
    c.rpc = rpc  # type: ignore[method-assign]
    return c


@pytest.mark.parametrize("history,message", [
    ({"baseFeePerGas": [], "reward": []}, "eth_feeHistory: baseFeePerGas = '[]': no base fee"),
    ({"reward": []}, "eth_feeHistory: baseFeePerGas = 'None': no base fee"),
    ({"baseFeePerGas": ["0xzz"]}, "eth_feeHistory: baseFeePerGas[-1] = '0xzz' is not a 0x-hex quantity"),
    ({"baseFeePerGas": ["0x1"], "reward": [["7"]]}, "eth_feeHistory: reward[0][0] = '7' is not a 0x-hex quantity"),
    ("oops", "eth_feeHistory: answer = 'oops' is not an object"),
])
def test_fee_history_answers_are_validated(history, message):
    with pytest.raises(ChainError) as e:
        _offline_client({"eth_feeHistory": history}).fees()
    assert message in str(e.value)


def test_fee_modes():
    c = _offline_client({"eth_feeHistory": {"baseFeePerGas": ["0x10", "0x20"], "reward": [["0x5"]]},
                         "eth_gasPrice": "0x64", "eth_getBlockByNumber": {"number": "0x1", "hash": KEY}})
    assert c.fee_fields() == {"gasPrice": max(125, c.min_priority_fee_wei)}  # auto: no baseFeePerGas -> type 0
    c.fee_mode, c._eip1559 = "eip1559", None
    assert c.fee_fields()["type"] == 2 and c.fee_fields()["maxFeePerGas"] == 2 * 0x20 + c.min_priority_fee_wei
    with pytest.raises(ValueError, match="fee_mode must be one of"):
        ChainClient("http://127.0.0.1:9", "0x" + "01" * 32, fee_mode="cheap")


def test_a_tag_error_in_any_wording_means_no_tag_but_latest_errors_still_raise():
    from rlhf_ledger.anchoring.chain import RPCError

    c = _offline_client({"eth_getBlockByNumber": RPCError("eth_getBlockByNumber", {"code": -39001, "message":
                                                           "unknown block"}, where="x")})
    assert c.block_number("finalized") is None and c.block_number("safe") is None
    with pytest.raises(RPCError):
        c.block_number("latest")
    bad = _offline_client({"eth_getBlockByNumber": {"number": None}})
    with pytest.raises(ChainError, match=r"eth_getBlockByNumber\(finalized\): number = 'None' is not a 0x-hex"):
        bad.block_number("finalized")


def test_receipt_and_chain_id_answers_are_validated():
    c = _offline_client({"eth_getTransactionReceipt": {"blockNumber": "0x1", "status": "0x1",
                                                       "transactionIndex": None, "gasUsed": "0x1"},
                         "eth_chainId": "10"})
    with pytest.raises(ChainError, match="eth_getTransactionReceipt: transactionIndex = 'None'"):
        c.receipt(KEY)
    with pytest.raises(ChainError, match="eth_chainId: result = '10' is not a 0x-hex quantity"):
        _ = c.chain_id
