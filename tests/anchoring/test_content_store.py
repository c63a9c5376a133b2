"""LocalContentStore: round trips, CID spellings, tamper detection, atomic writes."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from rlhf_ledger.anchoring.cid import (
    CHUNK_SIZE,
    CidError,
    CidMismatchError,
    cid_for_bytes,
    parse_cid,
    sha256_multihash,
    to_v0,
)
from rlhf_ledger.anchoring.content_store import ContentNotFoundError, ContentStore, LocalContentStore


@pytest.fixture
def store(tmp_path: Path) -> LocalContentStore:
    return LocalContentStore(tmp_path / "cas")


def test_is_a_content_store(store: LocalContentStore) -> None:
    assert isinstance(store, ContentStore)


@pytest.mark.parametrize("size", [0, 1, 1000, CHUNK_SIZE + 1, 3 * CHUNK_SIZE])
def test_round_trip(store: LocalContentStore, size: int) -> None:
    data = os.urandom(size)
    cid = store.put(data)
    assert cid == cid_for_bytes(data) and cid.startswith("bafy")
    assert (store.directory / cid).read_bytes() == data
    assert store.has(cid) and store.has(to_v0(cid))
    assert store.get(cid) == data
    assert store.get(to_v0(cid)) == data  # the CIDv0 spelling names the same file
    store.pin(cid)


def test_put_is_idempotent_and_leaves_no_temp_files(store: LocalContentStore) -> None:
    a = store.put(b"manifest")
    b = store.put(b"manifest")
    assert a == b
    assert sorted(p.name for p in store.directory.iterdir()) == [a]


def test_missing(store: LocalContentStore) -> None:
    cid = cid_for_bytes(b"never stored")
    assert not store.has(cid)
    with pytest.raises(ContentNotFoundError) as e:
        store.get(cid)
    assert cid in str(e.value)
    with pytest.raises(ContentNotFoundError):
        store.pin(cid)


def test_tampered_file_is_detected(store: LocalContentStore) -> None:
    data = os.urandom(CHUNK_SIZE + 100)
    cid = store.put(data)
    path = store.directory / cid
    corrupted = bytearray(data)
    corrupted[CHUNK_SIZE + 5] ^= 0x01  # flip one bit in the second chunk
    path.write_bytes(bytes(corrupted))
    with pytest.raises(CidMismatchError) as e:
        store.get(cid)
    assert cid in str(e.value)
    path.write_bytes(data[:-1])  # truncation
    with pytest.raises(CidMismatchError):
        store.get(cid)


def test_swapped_files_are_detected(store: LocalContentStore) -> None:
    a, b = store.put(b"first"), store.put(b"second")
    (store.directory / a).write_bytes(b"second")
    with pytest.raises(CidMismatchError):
        store.get(a)
    assert store.get(b) == b"second"


@pytest.mark.parametrize("bad", ["../etc/passwd", "bafy/../../x", "", "Qm"])
def test_bad_cids_cannot_address_files(store: LocalContentStore, bad: str) -> None:
    assert not store.has(bad)
    with pytest.raises(CidError):
        store.get(bad)


def test_blocks(store: LocalContentStore) -> None:
    data = os.urandom(2 * CHUNK_SIZE + 1)
    cid = store.put(data)
    blocks = store.blocks(cid)
    assert cid in blocks and len(blocks) == 4  # root + 3 leaves
    for key, block in blocks.items():
        assert parse_cid(key).multihash == sha256_multihash(block)

