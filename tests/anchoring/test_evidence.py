"""Anchor evidence on a real anvil: several transactions per block (anchors, transfers, other
contract calls), verification offline, and rejection of every kind of tampering."""

from __future__ import annotations

import copy
import json

import pytest
import rlp
from eth_utils import keccak

from rlhf_ledger.anchoring.chain import ChainClient, log_id_for_origin
from rlhf_ledger.anchoring.devchain import Anvil
from rlhf_ledger.anchoring.evidence import (
    EvidenceError,
    build_evidence,
    build_receipt_trie,
    trie_proof,
    verify_evidence,
    verify_mpt_proof,
)
from tests.anchoring.simlog import LOG_KEY, registered

pytestmark = pytest.mark.anvil


def _transfer(client: ChainClient, to: str) -> str:
    return client.send(to, "0x", what="transfer", value=1)


@pytest.fixture()
def crowded_block(owner, account_client, manual_mining):  # type: ignore[no-untyped-def]
    """One block with 24 transactions: anchors from two submitters, ETH transfers and an authorise."""
    second = account_client(1, owner.contract_address)
    sent: list[tuple[str, str, int]] = []  # (tx hash, origin, size)
    hashes = [owner.authorize(second.address)]  # automine is off: mine it before second anchors
    for i in range(8):  # and the 16 logs' registrations
        hashes.append(owner.register_log(f"example.org/crowded-{i}", LOG_KEY))
        hashes.append(owner.register_log(f"example.org/crowded-{i}/2", LOG_KEY))
    manual_mining.mine()
    for h in hashes:
        owner.wait_for_receipt(h)
    hashes = []
    for i in range(8):
        origin = f"example.org/crowded-{i}"
        h = owner.anchor(log_id_for_origin(origin), i + 1, keccak(text=origin), f"bafy-{i}")
        sent.append((h, origin, i + 1))
        hashes.append(_transfer(second, owner.address))
        h2 = second.anchor(log_id_for_origin(origin + "/2"), 100 + i, keccak(text=origin + "/2"), "")
        sent.append((h2, origin + "/2", 100 + i))
        hashes += [h, h2]
    manual_mining.mine()
    receipts = [owner.wait_for_receipt(h) for h in hashes]
    assert len({r["blockHash"] for r in receipts}) == 1, "all transactions must share one block"
    return owner, sent


def test_evidence_for_every_anchor_in_a_crowded_block(crowded_block) -> None:  # type: ignore[no-untyped-def]
    client, sent = crowded_block
    block_hashes = set()
    for tx_hash, origin, size in sent:
        ev = build_evidence(client, tx_hash)
        ev = json.loads(json.dumps(ev))  # JSON-able and still valid after a round trip
        checked = verify_evidence(ev, block_hash=ev["block_hash"])
        assert checked.log_id == log_id_for_origin(origin)
        assert checked.tree_size == size and checked.root_hash == keccak(text=origin)
        assert ev["log_id"] == "0x" + log_id_for_origin(origin).hex()
        assert ev["chain_id"] == client.chain_id and ev["contract"] == client.contract_address
        rcpt = client.receipt(tx_hash)
        assert ev["tx_index"] == int(rcpt["transactionIndex"], 16)
        assert ev["log_index"] == int(rcpt["logs"][0]["logIndex"], 16)
        assert keccak(bytes.fromhex(ev["block_header_rlp"][2:])).hex() == ev["block_hash"][2:]
        block_hashes.add(ev["block_hash"])
    assert len(block_hashes) == 1
    ev = build_evidence(client, sent[-1][0])
    assert ev["tx_index"] > 16 and len(ev["receipt_proof"]) >= 2  # a multi-level trie was walked


def test_evidence_in_a_single_transaction_block(owner) -> None:  # type: ignore[no-untyped-def]
    log_id = registered(owner, "example.org/alone")
    tx = owner.anchor(log_id, 7, b"\x77" * 32, "bafy-alone")
    owner.wait_for_receipt(tx)
    ev = build_evidence(owner, tx)
    assert ev["tx_index"] == 0 and ev["receipt_proof"] and ev["cid"] == "bafy-alone"
    assert verify_evidence(ev).tree_size == 7


def test_non_anchor_transaction_has_no_evidence(owner, anvil) -> None:  # type: ignore[no-untyped-def]
    tx = owner.authorize(anvil.addresses[2])
    owner.wait_for_receipt(tx)
    with pytest.raises(EvidenceError, match="exactly one Anchored log"):
        build_evidence(owner, tx)


@pytest.fixture()
def evidence(crowded_block):  # type: ignore[no-untyped-def]
    client, sent = crowded_block
    return build_evidence(client, sent[9][0])


def _flip(hex_value: str, at: int) -> str:
    raw = bytearray(bytes.fromhex(hex_value[2:]))
    raw[at] ^= 0x01
    return "0x" + raw.hex()


@pytest.mark.parametrize(
    "tamper, where",
    [
        (lambda e: e.update(block_header_rlp=_flip(e["block_header_rlp"], 40)), "block_header_rlp"),
        (lambda e: e.update(block_hash="0x" + "11" * 32), "block_header_rlp"),
        (lambda e: e.update(block_number=e["block_number"] + 1), "block_number"),
        (lambda e: e.update(receipt_rlp=_flip(e["receipt_rlp"], 300)), "receipt_rlp"),
        (lambda e: e["receipt_proof"].__setitem__(0, _flip(e["receipt_proof"][0], 5)), "receipt_proof[0]"),
        (lambda e: e["receipt_proof"].__setitem__(-1, _flip(e["receipt_proof"][-1], 50)), "receipt_proof"),
        (lambda e: e["receipt_proof"].pop(), "receipt_proof"),
        (lambda e: e["receipt_proof"].append("0x80"), "receipt_proof"),
        (lambda e: e.update(tx_index=e["tx_index"] + 1), "receipt"),
        (lambda e: e.update(tree_size=e["tree_size"] + 1), "tree_size"),
        (lambda e: e.update(root_hash="0x" + "00" * 32), "root_hash"),
        (lambda e: e.update(log_id="0x" + "00" * 32), "log_id"),
        (lambda e: e.update(cid="bafy-other"), "cid"),
        (lambda e: e.update(contract="0x" + "12" * 20), "contract"),
        (lambda e: e.update(contract=e["contract"].lower()), "contract"),
        (lambda e: e.update(receipt_log_position=1), "receipt_log_position"),
        (lambda e: e.update(submitter="0x" + "12" * 20), "submitter"),
        (lambda e: e.update(version=2), "evidence"),
        (lambda e: e.pop("tx_index"), "tx_index"),
    ],
)
def test_tampered_evidence_is_rejected(evidence, tamper, where) -> None:  # type: ignore[no-untyped-def]
    verify_evidence(evidence)
    bad = copy.deepcopy(evidence)
    tamper(bad)
    with pytest.raises(EvidenceError) as e:
        verify_evidence(bad)
    assert where in (e.value.where or "")


def test_evidence_for_another_block_than_trusted(evidence) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(EvidenceError, match="another block"):
        verify_evidence(evidence, block_hash="0x" + "22" * 32)


def test_mpt_proof_walker_against_py_trie_for_many_sizes() -> None:
    # Our proof walker is independent of py-trie; check it on tries of 1..130 values
    # (covers embedded nodes (short values), extensions, and the key rlp(0) = 0x80).
    for n in (1, 2, 3, 16, 17, 128, 130):
        values = [bytes([i % 256]) * (1 + (i * 7) % 90) for i in range(n)]
        t = build_receipt_trie(values)
        for index in {i for i in (0, 1, n // 2, n - 1, 127, 128) if i < n}:
            key = rlp.encode(index)
            proof = trie_proof(t, key)
            assert verify_mpt_proof(t.root_hash, key, proof) == values[index]
        with pytest.raises(EvidenceError):
            verify_mpt_proof(t.root_hash, rlp.encode(n + 1000), trie_proof(t, rlp.encode(0)))


def test_header_encoding_for_cancun_fork() -> None:
    """Headers of an older fork (no requestsHash) also hash to the block hash."""
    with Anvil(accounts=1, hardfork="cancun") as chain:
        client = ChainClient(chain.rpc_url, chain.private_keys[0])
        client.deploy()
        client.wait_for_receipt(client.authorize(client.address))
        tx = client.anchor(registered(client, "example.org/cancun"), 3, b"\x33" * 32, "bafy-cancun")
        client.wait_for_receipt(tx)
        block = client.block(client.receipt(tx)["blockHash"])
        assert "requestsHash" not in block or block["requestsHash"] is None
        ev = build_evidence(client, tx)
        assert verify_evidence(ev).tree_size == 3
        assert len(rlp.decode(bytes.fromhex(ev["block_header_rlp"][2:]))) == 20


def test_documented_example_verifies_offline() -> None:
    """docs/anchor-evidence.md carries a real example; it must stay valid (no network needed)."""
    from rlhf_ledger.anchoring.devchain import REPO_ROOT

    text = (REPO_ROOT / "docs" / "anchor-evidence.md").read_text()
    example = json.loads(text.split("```json", 1)[1].split("```", 1)[0])
    checked = verify_evidence(example)
    assert checked.log_id == log_id_for_origin("example.org/log")
    assert checked.tree_size == 3 and checked.root_hash == b"\xa5" * 32
