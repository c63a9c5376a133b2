"""Content ids: the CID Kubo's default `ipfs add` gives a byte string (docs/content-ids.md).

Kubo defaults, from the UnixFS / dag-pb / CID specs: fixed 256 KiB chunks; each chunk is a
dag-pb leaf whose Data is UnixFS{Type=File, Data=chunk, filesize}; a balanced DAG with at most
174 links per node, internal nodes carrying UnixFS{Type=File, filesize, blocksizes} and links
{Hash, Name="", Tsize=cumulative bytes}; a single-chunk file is just its leaf. Node ids are
sha2-256 multihashes; shown as CIDv1 (dag-pb, base32 lower, multibase prefix 'b').
"""

from __future__ import annotations

import base64
import hashlib

CHUNK = 256 * 1024
MAX_LINKS = 174
DAG_PB = 0x70
RAW = 0x55
SHA2_256 = 0x12
_B58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"


class CIDError(ValueError):
    pass


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _field_bytes(num: int, data: bytes) -> bytes:
    return _varint(num << 3 | 2) + _varint(len(data)) + data


def _field_varint(num: int, value: int) -> bytes:
    return _varint(num << 3) + _varint(value)


def _unixfs_file(data: bytes | None, filesize: int, blocksizes: list[int]) -> bytes:
    out = _field_varint(1, 2)  # Type = File
    if data is not None and len(data):
        out += _field_bytes(2, data)
    out += _field_varint(3, filesize)
    for b in blocksizes:
        out += _field_varint(4, b)
    return out


def _pb_node(links: list[tuple[bytes, int]], data: bytes) -> bytes:
    out = b""
    for mh, tsize in links:  # dag-pb: Links (field 2) before Data (field 1)
        link = _field_bytes(1, mh) + _field_bytes(2, b"") + _field_varint(3, tsize)
        out += _field_bytes(2, link)
    return out + _field_bytes(1, data)


def _mh(block: bytes) -> bytes:
    return bytes([SHA2_256, 32]) + hashlib.sha256(block).digest()


def unixfs_multihash(content: bytes) -> bytes:
    """sha2-256 multihash of the root block Kubo's defaults build for `content`."""
    # level entries: (multihash, file bytes below, cumulative block bytes below incl. itself)
    level: list[tuple[bytes, int, int]] = []
    chunks = [content[i : i + CHUNK] for i in range(0, len(content), CHUNK)] or [b""]
    for c in chunks:
        block = _pb_node([], _unixfs_file(c, len(c), []))
        level.append((_mh(block), len(c), len(block)))
    if len(level) == 1:
        return level[0][0]
    while len(level) > 1:
        nxt = []
        for i in range(0, len(level), MAX_LINKS):
            group = level[i : i + MAX_LINKS]
            fsize = sum(g[1] for g in group)
            block = _pb_node([(g[0], g[2]) for g in group], _unixfs_file(None, fsize, [g[1] for g in group]))
            nxt.append((_mh(block), fsize, len(block) + sum(g[2] for g in group)))
        level = nxt
    return level[0][0]


def cid_v1(multihash: bytes) -> str:
    raw = bytes([0x01, DAG_PB]) + multihash
    return "b" + base64.b32encode(raw).decode("ascii").lower().rstrip("=")


def cid_for(content: bytes) -> str:
    return cid_v1(unixfs_multihash(content))


def _b58decode(s: str) -> bytes:
    n = 0
    for ch in s:
        i = _B58.find(ch)
        if i < 0:
            raise CIDError("not base58btc")
        n = n * 58 + i
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return b"\x00" * (len(s) - len(s.lstrip("1"))) + raw


def _read_varint(b: bytes, pos: int) -> tuple[int, int]:
    n = shift = 0
    while True:
        if pos >= len(b) or shift > 63:
            raise CIDError("truncated varint")
        x = b[pos]
        pos += 1
        n |= (x & 0x7F) << shift
        shift += 7
        if not x & 0x80:
            return n, pos


def parse_cid(cid: str) -> tuple[int, int, bytes]:
    """(version, codec, multihash) of a CIDv0 (`Qm...`) or base32 CIDv1 (`b...`)."""
    if type(cid) is not str or len(cid) > 200:
        raise CIDError("CID must be a short string")
    if len(cid) == 46 and cid.startswith("Qm"):
        mh = _b58decode(cid)
        if len(mh) != 34 or mh[:2] != b"\x12\x20":
            raise CIDError("CIDv0 must be a sha2-256 multihash")
        return 0, DAG_PB, mh
    if not cid.startswith("b") or cid != cid.lower():
        raise CIDError("CIDv1 must be base32 lower case with the multibase prefix 'b'")
    body = cid[1:].upper()
    try:
        raw = base64.b32decode(body + "=" * (-len(body) % 8))
    except ValueError:
        raise CIDError("CIDv1 is not valid base32") from None
    ver, p = _read_varint(raw, 0)
    codec, p = _read_varint(raw, p)
    if ver != 1:
        raise CIDError(f"unsupported CID version {ver}")
    mh = raw[p:]
    code, q = _read_varint(mh, 0)
    ln, q = _read_varint(mh, q)
    if len(mh) != q + ln:
        raise CIDError("multihash length does not match")
    return 1, codec, mh


def check_content(cid: str, content: bytes) -> None:
    """CIDError unless `content` is what `cid` names under Kubo's default add options."""
    ver, codec, mh = parse_cid(cid)
    if mh[:2] != b"\x12\x20" or len(mh) != 34:
        raise CIDError("CID multihash is not sha2-256")
    if codec == RAW:
        if mh[2:] != hashlib.sha256(content).digest():
            raise CIDError(f"content does not hash to the raw CID {cid}")
        return
    if codec != DAG_PB:
        raise CIDError(f"CID codec 0x{codec:x} is neither dag-pb nor raw: unsupported")
    got = unixfs_multihash(content)
    if got != mh:
        raise CIDError(f"content hashes to {cid_v1(got)}, not {cid}")
