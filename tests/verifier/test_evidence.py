import json
import os
from pathlib import Path

import pytest
import rlp
from trie import HexaryTrie

from rlhf_verifier.evidence import ANCHORED_TOPIC, EvidenceError, decode_anchored_data, to_checksum, verify_evidence
from rlhf_verifier.mpt import MPTError, verify_proof
from rlhf_verifier.rlp import RLPError, decode, encode, keccak256

HERE = Path(__file__).parent
# Real evidence produced on anvil 1.7.1 (default fork, 21 header fields), from docs/anchor-evidence.md.
EXAMPLE = json.loads((HERE / "anvil_evidence_example.json").read_text())


def test_keccak_known_answers():
    assert keccak256(b"").hex() == "c5d2460186f7233c927e7db2dcc703c0e500b653ca82273b7bfad8045d85a470"
    assert ANCHORED_TOPIC.hex() == "ce38881f7e6808c939f6adb5eea5546df59aa9f22f32ee3c13231f70abbb1591"


def test_real_anvil_evidence_verifies():
    a = verify_evidence(EXAMPLE)
    assert a.block_hash.hex() == EXAMPLE["block_hash"][2:]
    assert a.block_number == 3 and a.tree_size == 3 and a.root_hash == b"\xa5" * 32
    assert a.cid == EXAMPLE["cid"] and a.block_timestamp > 1_600_000_000
    assert to_checksum(a.submitter) == EXAMPLE["submitter"]


@pytest.mark.parametrize("field", ["block_header_rlp", "receipt_rlp", "block_hash", "log_id", "root_hash"])
def test_real_evidence_tampered_fields_rejected(field):
    for pos in (2, 40, len(EXAMPLE[field]) - 1):
        ev = dict(EXAMPLE)
        c = ev[field][pos]
        ev[field] = ev[field][:pos] + ("0" if c != "0" else "1") + ev[field][pos + 1 :]
        with pytest.raises(EvidenceError):
            verify_evidence(ev)


def test_claims_and_schema_rejected():
    for k, v in [("tree_size", 4), ("cid", "x"), ("block_number", 4), ("tx_index", 1), ("receipt_log_position", 1),
                 ("contract", EXAMPLE["contract"].lower()), ("version", 2), ("format", "other"),
                 ("submitter", to_checksum(b"\x01" * 20)), ("receipt_proof", EXAMPLE["receipt_proof"] * 2)]:
        ev = dict(EXAMPLE, **{k: v})
        with pytest.raises(EvidenceError):
            verify_evidence(ev)


def test_rlp_roundtrip_against_pyrlp_and_strictness():
    items = [b"", b"\x00", b"\x7f", b"\x80", b"a" * 55, b"a" * 56, [b"x", [b"", [b"y" * 100]]], [b"z"] * 60]
    for it in items:
        enc = rlp.encode(it)
        assert encode(it) == enc
        assert decode(enc) == (it if isinstance(it, bytes) else rlp.decode(enc))
    for bad in (b"\x81\x05", b"\xb8\x01a", b"\xc1", b"\x82a", b"\xb9\x00\x38" + b"a" * 56, b"\x80\x80"):
        with pytest.raises(RLPError):
            decode(bad)


def test_mpt_against_py_trie():
    t = HexaryTrie({})
    keys = [rlp.encode(i) for i in range(300)]
    for i, k in enumerate(keys):
        t[k] = b"v" * (1 + i % 3) if i % 2 else os.urandom(40)  # short values give embedded nodes
    for i in (0, 1, 2, 15, 16, 127, 128, 255, 299):
        # py-trie lists embedded (< 32 byte) nodes too; the spec's proof has hash-referenced ones only
        proof = [e for e in (rlp.encode(n) for n in t.get_proof(keys[i])) if len(e) >= 32]
        assert verify_proof(t.root_hash, keys[i], proof) == t[keys[i]]
        with pytest.raises(MPTError):
            verify_proof(t.root_hash, rlp.encode(1000), proof)
        with pytest.raises(MPTError):
            verify_proof(keccak256(b"x"), keys[i], proof)
        if len(proof) > 1:
            with pytest.raises(MPTError):
                verify_proof(t.root_hash, keys[i], proof[:-1])


def test_abi_data_strict():
    from eth_abi import encode as abi_encode

    data = abi_encode(["uint64", "bytes32", "string"], [7, b"\x01" * 32, "bafy"])
    assert decode_anchored_data(data) == (7, b"\x01" * 32, "bafy")
    for bad in (data[:-1], data + b"\x00" * 32, data[:127] + b"\x01" + data[128:], b"\x01" + data[1:]):
        with pytest.raises(EvidenceError):
            decode_anchored_data(bad)
