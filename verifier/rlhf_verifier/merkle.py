"""RFC 9162 Merkle tree verification, written from the RFC's algorithms.

* leaf hash = SHA-256(0x00 || entry), node hash = SHA-256(0x01 || left || right)
* inclusion proofs: RFC 9162 section 2.1.3.2
* consistency proofs: RFC 9162 section 2.1.4.2
* CompactRange: appends leaf hashes one at a time keeping O(log n) subtree roots, and
  yields the tree head (MTH) of any prefix size on demand.
"""

from __future__ import annotations

import hashlib

_sha = hashlib.sha256
EMPTY_ROOT = _sha(b"").digest()


class ProofError(ValueError):
    """A proof does not verify; the message says which check failed."""


def leaf_hash(entry: bytes) -> bytes:
    return _sha(b"\x00" + entry).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return _sha(b"\x01" + left + right).digest()


def root_from_inclusion(index: int, size: int, leaf: bytes, proof: list[bytes]) -> bytes:
    """RFC 9162 2.1.3.2 steps 1-5: the root that `proof` implies, or ProofError."""
    if not 0 <= index < size:
        raise ProofError(f"leaf index {index} is not below tree size {size}")
    fn, sn = index, size - 1
    r = leaf
    for p in proof:
        if sn == 0:
            raise ProofError("inclusion proof is longer than the tree allows")
        if fn & 1 or fn == sn:
            r = _sha(b"\x01" + p + r).digest()
            if not fn & 1:
                while True:
                    fn >>= 1
                    sn >>= 1
                    if fn & 1 or fn == 0:
                        break
        else:
            r = _sha(b"\x01" + r + p).digest()
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError("inclusion proof is shorter than the tree requires")
    return r


def verify_inclusion(index: int, size: int, leaf: bytes, proof: list[bytes], root: bytes) -> None:
    if root_from_inclusion(index, size, leaf, proof) != root:
        raise ProofError(f"inclusion proof for leaf {index} does not lead to the root of size {size}")


def verify_consistency(size1: int, size2: int, root1: bytes, root2: bytes, proof: list[bytes]) -> None:
    """RFC 9162 2.1.4.2; raises ProofError naming the failed step."""
    if size1 > size2:
        raise ProofError(f"consistency: first size {size1} is larger than second size {size2}")
    if size1 == size2:
        if proof:
            raise ProofError("consistency: proof between equal sizes must be empty")
        if root1 != root2:
            raise ProofError(f"consistency: two different roots for size {size1}")
        return
    if size1 == 0:
        if proof:
            raise ProofError("consistency: proof from the empty tree must be empty")
        return
    if not proof:
        raise ProofError("consistency: proof is empty")
    path = list(proof)
    if size1 & (size1 - 1) == 0:  # size1 is a power of two: prepend first_hash
        path.insert(0, root1)
    fn, sn = size1 - 1, size2 - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise ProofError("consistency: proof is longer than the sizes allow")
        if fn & 1 or fn == sn:
            fr = _sha(b"\x01" + c + fr).digest()
            sr = _sha(b"\x01" + c + sr).digest()
            if not fn & 1:
                while True:
                    fn >>= 1
                    sn >>= 1
                    if fn & 1 or fn == 0:
                        break
        else:
            sr = _sha(b"\x01" + sr + c).digest()
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError("consistency: proof is shorter than the sizes require")
    if fr != root1:
        raise ProofError(f"consistency: proof does not reproduce the root of size {size1}")
    if sr != root2:
        raise ProofError(f"consistency: proof does not reproduce the root of size {size2}")


class CompactRange:
    """Leaf hashes appended in order; `root()` is the MTH of everything appended so far.

    Keeps one hash per set bit of the size (the perfect subtrees of the RFC's
    largest-power-of-two split), so memory is O(log n) however long the log is.
    """

    __slots__ = ("size", "_stack")

    def __init__(self) -> None:
        self.size = 0
        self._stack: list[bytes] = []  # roots of perfect subtrees, largest first

    def append(self, leaf: bytes) -> None:
        h = leaf
        n = self.size
        stack = self._stack
        while n & 1:  # merge equal-height subtrees, as binary carry
            h = _sha(b"\x01" + stack.pop() + h).digest()
            n >>= 1
        stack.append(h)
        self.size += 1

    def root(self) -> bytes:
        if not self._stack:
            return EMPTY_ROOT
        r = self._stack[-1]
        for h in reversed(self._stack[:-1]):
            r = _sha(b"\x01" + h + r).digest()
        return r
