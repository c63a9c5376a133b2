"""Recursive Length Prefix decoding (Ethereum yellow paper, appendix B), strict.

Items are `bytes` or lists of items. Non-canonical encodings (a single byte below 0x80
wrapped in a string header, long forms for short payloads, leading zero length bytes) are
refused, so one value has one encoding and hashes cannot be ground.
"""

from __future__ import annotations

from typing import TypeAlias, TypeGuard

from Crypto.Hash import keccak

RLPItem: TypeAlias = bytes | list["RLPItem"]
MAX_DEPTH = 64


class RLPError(ValueError):
    pass


def byte_strings(items: list[RLPItem]) -> TypeGuard[list[bytes]]:
    """True if every item of a decoded list is a byte string (none is a nested list)."""
    return all(isinstance(x, bytes) for x in items)


def keccak256(data: bytes) -> bytes:
    return keccak.new(digest_bits=256, data=data).digest()


def _length(data: bytes, pos: int, n: int) -> int:
    if pos + n > len(data):
        raise RLPError("length prefix runs past the end of the input")
    if data[pos] == 0:
        raise RLPError("length has a leading zero byte")
    ln = int.from_bytes(data[pos : pos + n], "big")
    if ln < 56:
        raise RLPError("long-form length used for a payload shorter than 56 bytes")
    return ln


def _item(data: bytes, pos: int, depth: int) -> tuple[RLPItem, int]:
    if depth > MAX_DEPTH:
        raise RLPError(f"nesting deeper than {MAX_DEPTH}")
    if pos >= len(data):
        raise RLPError("unexpected end of input")
    b = data[pos]
    if b < 0x80:
        return data[pos : pos + 1], pos + 1
    if b < 0xB8:
        ln = b - 0x80
        start = pos + 1
        if start + ln > len(data):
            raise RLPError("string runs past the end of the input")
        if ln == 1 and data[start] < 0x80:
            raise RLPError("single byte below 0x80 must not carry a string prefix")
        return data[start : start + ln], start + ln
    if b < 0xC0:
        nl = b - 0xB7
        ln = _length(data, pos + 1, nl)
        start = pos + 1 + nl
        if start + ln > len(data):
            raise RLPError("string runs past the end of the input")
        return data[start : start + ln], start + ln
    if b < 0xF8:
        ln = b - 0xC0
        start = pos + 1
    else:
        nl = b - 0xF7
        ln = _length(data, pos + 1, nl)
        start = pos + 1 + nl
    end = start + ln
    if end > len(data):
        raise RLPError("list runs past the end of the input")
    items: list[RLPItem] = []
    p = start
    while p < end:
        it, p = _item(data, p, depth + 1)
        items.append(it)
    if p != end:
        raise RLPError("list payload length does not match its items")
    return items, end


def decode(data: bytes) -> RLPItem:
    item, end = _item(data, 0, 0)
    if end != len(data):
        raise RLPError(f"{len(data) - end} trailing byte(s) after the RLP item")
    return item


def encode(item: RLPItem) -> bytes:
    """RLP encoding (used for trie keys and to re-encode inline nodes)."""
    if isinstance(item, (bytes, bytearray)):
        b = bytes(item)
        if len(b) == 1 and b[0] < 0x80:
            return b
        return _prefix(len(b), 0x80) + b
    payload = b"".join(encode(x) for x in item)
    return _prefix(len(payload), 0xC0) + payload


def _prefix(n: int, base: int) -> bytes:
    if n < 56:
        return bytes([base + n])
    ln = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([base + 55 + len(ln)]) + ln


def to_int(b: RLPItem, what: str) -> int:
    """An RLP scalar: big-endian bytes without leading zeros."""
    if not isinstance(b, bytes):
        raise RLPError(f"{what} must be a byte string, not a list")
    if b[:1] == b"\x00":
        raise RLPError(f"{what} has a leading zero byte")
    return int.from_bytes(b, "big")
