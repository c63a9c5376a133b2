"""Unit tests of anchoring/cid.py: encodings, parsing, the DAG's structure. Parity with real Kubo
is in test_cid_kubo_parity.py."""

from __future__ import annotations

import hashlib

import pytest

from rlhf_ledger.anchoring.cid import (
    CHUNK_SIZE,
    CODEC_DAG_PB,
    CODEC_RAW,
    MAX_LINKS,
    Cid,
    CidError,
    CidMismatchError,
    b58decode,
    b58encode,
    cid_for_bytes,
    iter_links,
    parse_cid,
    read_varint,
    same_content,
    sha256_multihash,
    to_v0,
    to_v1,
    unixfs_blocks,
    varint,
    verify_cid,
)

# Well-known CIDs printed by `ipfs add` with default options (and reproduced in
# test_cid_kubo_parity.py against the embedded Kubo).
EMPTY_V0 = "QmbFMke1KXqnYyBBWxB74N4c5SBnJMVAiMNRcGu6x1AwQH"
HELLO_V0 = "QmT78zSuBmuS4z925WZfrqQ1qHaJ56DQaTfyMUF7F8ff5o"  # b"hello world\n"


def test_known_vectors() -> None:
    assert to_v0(cid_for_bytes(b"")) == EMPTY_V0
    assert to_v0(cid_for_bytes(b"hello world\n")) == HELLO_V0
    assert cid_for_bytes(b"").startswith("bafybei")


def test_empty_file_block_bytes() -> None:
    # PBNode{Data: UnixFS{Type: File, filesize: 0}} with the UnixFS Data field absent.
    root, blocks = unixfs_blocks(b"")
    assert blocks == {root: bytes.fromhex("0a0408021800")}


def test_single_chunk_block_bytes() -> None:
    root, blocks = unixfs_blocks(b"abc")
    assert blocks == {root: bytes.fromhex("0a09" "0802" "1203616263" "1803")}


def test_v0_v1_round_trip_and_compare() -> None:
    v1 = to_v1(HELLO_V0)
    assert v1 == cid_for_bytes(b"hello world\n")
    assert to_v0(v1) == HELLO_V0
    assert same_content(v1, HELLO_V0)
    assert not same_content(v1, EMPTY_V0)
    parsed = parse_cid(v1)
    assert (parsed.version, parsed.codec) == (1, CODEC_DAG_PB)
    assert parsed.multihash == parse_cid(HELLO_V0).multihash
    assert parsed.to_bytes()[:2] == b"\x01\x70"
    assert str(parse_cid(HELLO_V0)) == HELLO_V0


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "Qm" + "0" * 44,  # '0' is not base58
        "zb2rhe5P4gXftAwvA4eXQ5HJwsER2owDyS9sKaQRRVQPn93bA",  # base58 CIDv1: unsupported multibase
        "BAFYBEICG2REBJOOFV4KBYOVKW7AF3RPIITVNL6I7CKCYWAQ6XJCXNC2MBY",  # uppercase base32
        "bafybeicg2rebjoofv4kbyovkw7af3rpiitvnl6i7ckcywaq6xjcxnc2mb",  # truncated digest
        "b" + "aa",  # version 0 inside a multibase string
    ],
)
def test_parse_rejects(bad: str) -> None:
    with pytest.raises(CidError):
        parse_cid(bad)


def test_raw_codec_has_no_v0() -> None:
    raw = Cid(1, CODEC_RAW, sha256_multihash(b"x"))
    assert parse_cid(raw.v1()) == raw
    with pytest.raises(CidError):
        raw.v0()


def test_varint_and_base58() -> None:
    for n in (0, 1, 127, 128, 300, 262144, 2**63 - 1):
        assert read_varint(varint(n), 0, "t") == (n, len(varint(n)))
    with pytest.raises(CidError):
        read_varint(b"\x80\x00", 0, "t")  # non-minimal
    for data in (b"", b"\0\0\x01", hashlib.sha256(b"q").digest()):
        assert b58decode(b58encode(data)) == data


def test_verify_cid() -> None:
    data = b"manifest bytes"
    cid = cid_for_bytes(data)
    verify_cid(cid, data)
    verify_cid(to_v0(cid), data)
    with pytest.raises(CidMismatchError) as e:
        verify_cid(cid, data + b"!")
    assert cid in str(e.value)
    verify_cid(Cid(1, CODEC_RAW, sha256_multihash(data)).v1(), data)
    with pytest.raises(CidMismatchError):
        verify_cid(Cid(1, CODEC_RAW, sha256_multihash(data)).v1(), b"other")
    with pytest.raises(CidError):
        verify_cid(Cid(1, 0x71, sha256_multihash(data)).v1(), data)  # dag-cbor: refused


def _leaf_payload(block: bytes) -> bytes:
    """Decode PBNode{Data: UnixFS{Type, Data, filesize}} of a leaf written by cid.py."""
    assert block[0] == 0x0A
    _, pos = read_varint(block, 1, "leaf")
    assert block[pos : pos + 2] == b"\x08\x02"
    pos += 2
    if block[pos] != 0x12:
        return b""
    n, pos = read_varint(block, pos + 1, "leaf")
    return block[pos : pos + n]


def _walk(cid: str, blocks: dict[str, bytes]) -> tuple[bytes, int, int]:
    """Reassemble the file; return (bytes, depth, cumulative size) and check every block hash."""
    block = blocks[cid]
    assert sha256_multihash(block) == parse_cid(cid).multihash
    links = list(iter_links(block))
    if not links:
        return _leaf_payload(block), 0, len(block)
    assert len(links) <= MAX_LINKS
    parts, depths, total = [], set(), len(block)
    for child, name, tsize in links:
        assert child.version == 0 and name == ""  # default layout: CIDv0 links, empty names
        data, depth, size = _walk(child.v1(), blocks)
        assert size == tsize
        parts.append(data)
        depths.add(depth)
        total += tsize
    assert len(depths) == 1, "balanced: all leaves at one depth"
    return b"".join(parts), depths.pop() + 1, total


@pytest.mark.parametrize(
    "size, depth, root_links",
    [(CHUNK_SIZE, 0, 0), (CHUNK_SIZE + 1, 1, 2), (3 * CHUNK_SIZE, 1, 3), (MAX_LINKS * CHUNK_SIZE, 1, MAX_LINKS)],
)
def test_dag_structure(size: int, depth: int, root_links: int) -> None:
    data = hashlib.shake_256(str(size).encode()).digest(size)
    root, blocks = unixfs_blocks(data)
    assert root == cid_for_bytes(data)
    rebuilt, got_depth, _ = _walk(root, blocks)
    assert rebuilt == data
    assert got_depth == depth
    assert len(list(iter_links(blocks[root]))) == root_links


def test_second_level_starts_after_174_chunks() -> None:
    # 175 chunks: root has 2 links, the first a full 174-leaf node, the second a 1-leaf node.
    data = bytes(MAX_LINKS * CHUNK_SIZE + 10)
    root, blocks = unixfs_blocks(data)
    rebuilt, depth, _ = _walk(root, blocks)
    assert rebuilt == data and depth == 2
    children = [c.v1() for c, _, _ in iter_links(blocks[root])]
    assert [len(list(iter_links(blocks[c]))) for c in children] == [MAX_LINKS, 1]
