"""Batch manifests (docs/manifest-format.md) built from a real SQLite ledger, checked and tampered."""

from __future__ import annotations

import base64
import json
import os

import pytest

from rlhf_ledger.anchoring.cid import cid_for_bytes
from rlhf_ledger.anchoring.content_store import LocalContentStore
from rlhf_ledger.anchoring.manifest import (
    ManifestError,
    build_manifest,
    encode_manifest,
    manifest_cid,
    root_from_range,
    verify_manifest,
)
from rlhf_ledger.core import merkle
from rlhf_ledger.core.errors import LedgerError, ProofError
from rlhf_ledger.core.events import commit_fields
from rlhf_ledger.core.jcs import canonicalize
from tests.anchoring.fixtures import LOG, ledger, producer  # shared fixtures


def test_root_from_range_matches_rfc_roots():
    leaves = [os.urandom(32) for _ in range(70)]
    for start in range(0, 40):
        # compact range of [0, start) from the reference builder: each perfect subtree's root
        keys = merkle.perfect_subtrees(0, start)
        prefix = [merkle.root_from_leaf_hashes(leaves[i << lv:(i + 1) << lv]) for lv, i in keys]
        assert root_from_range(prefix, start, []) == merkle.root_from_leaf_hashes(leaves[:start])
        for end in (start + 1, start + 7, 70):
            assert root_from_range(prefix, start, leaves[start:end]) == merkle.root_from_leaf_hashes(leaves[:end])
    with pytest.raises(ManifestError, match="prefix has 0 hashes"):
        root_from_range([], 5, leaves[:1])


def test_first_and_next_manifest_verify_and_carry_no_clear_data(ledger, producer, tmp_path):
    secret = "annotator alice@example.org says: tell me a secret"
    base = ledger.size(LOG)  # the producer's key event comes first (docs/keys.md)
    events = [producer.event() for _ in range(5)]
    ledger.append(events, log_id=LOG)
    first = ledger.checkpoint(LOG)
    doc1 = build_manifest(ledger, LOG, first, None)
    assert doc1["previous"] is None and doc1["consistency_proof"] == [] and doc1["prefix"] == []
    assert doc1["range"] == {"start": 0, "end": base + 5} and len(doc1["leaf_hashes"]) == base + 5

    body, openings = commit_fields({"prompt": secret, "step": 6}, ["prompt"])
    env = producer.event(body=body)
    env["openings"] = openings
    ledger.append([env, *producer.events(6)], log_id=LOG)
    second = ledger.checkpoint(LOG)
    doc2 = build_manifest(ledger, LOG, second, first)
    data = encode_manifest(doc2)
    assert data == canonicalize(json.loads(data))
    info = ledger.log_info(LOG)
    parsed = verify_manifest(data, public_key=info.public_key, cid=cid_for_bytes(data), origin=info.origin)
    start, end = base + 5, base + 12
    assert (parsed.start, parsed.end) == (start, end) and parsed.previous.size == start
    assert [i for i, _ in parsed.payloads] == [start]
    assert parsed.leaf_hashes == [h for _, h in ledger.iter_leaf_hashes(LOG, start, end)]
    assert secret.encode() not in data and b"alice" not in data
    # The leaf hashes in the manifest rebuild the signed root together with the stored prefix.
    assert root_from_range([base64.b64decode(h) for h in doc2["prefix"]], start, parsed.leaf_hashes) == second.root

    store = LocalContentStore(tmp_path / "content")
    cid = store.put(data)
    assert cid == manifest_cid(doc2)
    assert verify_manifest(store.get(cid), public_key=info.public_key, cid=cid).checkpoint.size == end


def _tampered(data: bytes, change) -> bytes:
    doc = json.loads(data)
    change(doc)
    return canonicalize(doc)


def test_tampering_is_detected(ledger, producer):
    ledger.append(producer.events(3), log_id=LOG)
    first = ledger.checkpoint(LOG)
    ledger.append(producer.events(6), log_id=LOG)
    second = ledger.checkpoint(LOG)
    data = encode_manifest(build_manifest(ledger, LOG, second, first))
    pk = ledger.log_info(LOG).public_key
    other = base64.b64encode(os.urandom(32)).decode()

    def swap_leaf(d):
        d["leaf_hashes"][2] = other

    def drop_leaf(d):
        d["leaf_hashes"].pop()

    def bad_proof(d):
        d["consistency_proof"][0] = other

    def bad_prefix(d):
        d["prefix"][0] = other

    def bad_prev(d):
        # the previous checkpoint's size line (after the producer's key event and 3 events)
        d["previous"]["note"] = d["previous"]["note"].replace(f"\n{first.size}\n", f"\n{first.size - 1}\n")

    def clear_payload(d):
        d["payloads"] = [{"index": 4, "ref": "prompt: hello"}]

    def extra(d):
        d["prompt"] = "hello"

    cases = {swap_leaf: "do not rebuild the checkpoint", drop_leaf: "has 5 hashes",
             bad_proof: "does not match", bad_prefix: "previous checkpoint's root", bad_prev: "signature",
             clear_payload: "ref must be", extra: "unknown"}
    for change, message in cases.items():
        with pytest.raises(LedgerError, match=message):
            verify_manifest(_tampered(data, change), public_key=pk)
    with pytest.raises(ManifestError, match="JCS"):
        verify_manifest(json.dumps(json.loads(data), indent=1).encode(), public_key=pk)
    with pytest.raises(LedgerError):
        verify_manifest(data, public_key=pk, cid=cid_for_bytes(data + b" "))
    with pytest.raises(ProofError):
        verify_manifest(data, public_key=os.urandom(32))


def test_build_refuses_a_non_growing_checkpoint(ledger, producer):
    ledger.append(producer.events(3), log_id=LOG)
    cp = ledger.checkpoint(LOG)
    with pytest.raises(ManifestError, match="does not grow"):
        build_manifest(ledger, LOG, cp, cp)
