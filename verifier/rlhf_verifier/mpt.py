"""Merkle Patricia Trie proof verification (Ethereum yellow paper, appendix D).

A proof is the list of RLP-encoded trie nodes on the path from the root to the key, root first, as
`eth_getProof` and receipt proofs carry them. Nodes shorter than 32 bytes are embedded in
their parent instead of being referenced by hash.
"""

from __future__ import annotations

from .rlp import RLPError, RLPItem, decode, encode, keccak256


class MPTError(ValueError):
    pass


def _nibbles(key: bytes) -> list[int]:
    out: list[int] = []
    for b in key:
        out += (b >> 4, b & 0x0F)
    return out


def _hex_prefix(path: bytes) -> tuple[list[int], bool]:
    if not path:
        raise MPTError("empty compact path in a trie node")
    flag = path[0] >> 4
    if flag > 3:
        raise MPTError("bad compact path flag")
    nib = _nibbles(path)
    if flag & 1:
        nib = nib[1:]
    else:
        if path[0] & 0x0F:
            raise MPTError("non-zero padding nibble in an even compact path")
        nib = nib[2:]
    return nib, bool(flag & 2)


def verify_proof(root: bytes, key: bytes, proof: list[bytes]) -> bytes:
    """Return the value stored under `key` in the trie with root hash `root`; MPTError if the
    proof does not prove it (missing key, wrong node hash, malformed node, unused nodes)."""
    path = _nibbles(key)
    ref: RLPItem = root
    nxt = 0  # proof entries are consumed in order, root first, each exactly once
    depth = 0
    while True:
        depth += 1
        if depth > 130:
            raise MPTError("proof path too deep")
        if isinstance(ref, bytes):
            if len(ref) != 32:
                raise MPTError("a node reference must be a 32-byte hash")
            if nxt >= len(proof):
                raise MPTError(f"proof ends before the node with hash 0x{ref.hex()}")
            raw = proof[nxt]
            nxt += 1
            if keccak256(raw) != ref:
                raise MPTError(f"proof node {nxt - 1} does not hash to the reference 0x{ref.hex()}")
            try:
                node = decode(raw)
            except RLPError as e:
                raise MPTError(f"trie node is not valid RLP: {e}") from None
        else:
            node = ref  # embedded node (its RLP is shorter than 32 bytes)
            if len(encode(node)) >= 32:
                raise MPTError("an embedded node must encode to fewer than 32 bytes")
        if not isinstance(node, list):
            raise MPTError("trie node must be a list")
        if len(node) == 17:
            if not path:
                value = node[16]
                break
            child = node[path[0]]
            path = path[1:]
            if child == b"":
                raise MPTError("key is not in the trie (empty branch slot)")
            ref = child
        elif len(node) == 2:
            if not isinstance(node[0], bytes):
                raise MPTError("trie node path must be bytes")
            nib, leaf = _hex_prefix(node[0])
            if path[: len(nib)] != nib:
                raise MPTError("key is not in the trie (path diverges)")
            path = path[len(nib):]
            if leaf:
                if path:
                    raise MPTError("key is not in the trie (leaf for a different key)")
                value = node[1]
                break
            ref = node[1]
        else:
            raise MPTError(f"trie node has {len(node)} items (expected 2 or 17)")
    if not isinstance(value, bytes) or value == b"":
        raise MPTError("key is not in the trie (no value)")
    if nxt != len(proof):
        raise MPTError(f"proof carries {len(proof) - nxt} node(s) not on the key's path")
    return value
