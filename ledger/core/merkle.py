"""RFC 9162 section 2.1 Merkle tree: hashing, stored-node appends, proofs and verification.

Everything here is a pure function over a *node getter*, so the same code serves the SQL store,
the in-memory store used by tests and benchmarks, and any future tile store.

Stored-node model (see docs/merkle.md): node ``(level, index)`` is the root hash of the perfect
subtree over leaves ``[index * 2**level, (index + 1) * 2**level)``. Level 0 holds the leaf hashes.
Only perfect subtrees are ever stored; they never change once complete, so storage is
append-only. The hash of any other RFC 9162 subtree is folded on demand from at most
``log2(n) + 1`` stored nodes.

A getter takes a list of ``(level, index)`` keys and returns a dict with the hash of each. Every
proof function first works out the full list of keys it needs, calls the getter exactly once,
then assembles the result: one round trip to the database per proof, never a tree rebuild.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence
from hmac import compare_digest

from rlhf_ledger.core.errors import LedgerError, ProofError

__all__ = [
    "HASH_SIZE",
    "EMPTY_ROOT",
    "NodeKey",
    "NodeGetter",
    "MissingNodeError",
    "leaf_hash",
    "node_hash",
    "root_from_leaf_hashes",
    "perfect_subtrees",
    "append_nodes",
    "append_many",
    "root",
    "inclusion_proof",
    "consistency_proof",
    "check_inclusion",
    "check_consistency",
    "verify_inclusion",
    "verify_consistency",
    "MemoryNodeStore",
    "InMemoryTree",
]

HASH_SIZE = 32
NodeKey = tuple[int, int]
NodeGetter = Callable[[list[NodeKey]], dict[NodeKey, bytes]]

# RFC 9162 2.1.1: the hash of an empty list is the hash of an empty string.
EMPTY_ROOT = hashlib.sha256(b"").digest()

_sha256 = hashlib.sha256


class MissingNodeError(LedgerError):
    """The node store could not return a node that a complete tree of this size must hold."""

    code = "merkle_node_missing"


# --- RFC 9162 2.1.1 hashing -------------------------------------------------------------------


def leaf_hash(entry: bytes) -> bytes:
    """MTH({d(0)}) = HASH(0x00 || d(0))."""
    return _sha256(b"\x00" + entry).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """HASH(0x01 || MTH(D[0:k]) || MTH(D[k:n]))."""
    return _sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """k: the largest power of two smaller than n (n > 1), as RFC 9162 2.1.1 defines the split."""
    return 1 << ((n - 1).bit_length() - 1)


def root_from_leaf_hashes(hashes: Sequence[bytes]) -> bytes:
    """MTH(D[n]) from the leaf hashes, iteratively; the reference used by tests.

    Building level by level and carrying an odd last node up unchanged gives exactly the
    largest-power-of-two split: the carried node is the right-most perfect subtree, which RFC
    9162 joins only with the subtree to its left, as here.
    """
    if not hashes:
        return EMPTY_ROOT
    level = list(hashes)
    while len(level) > 1:
        nxt = [node_hash(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            nxt.append(level[-1])
        level = nxt
    return level[0]


# --- stored-node model ------------------------------------------------------------------------


def compact_push(stack: list[tuple[int, bytes]], h: bytes) -> None:
    """Append a leaf hash to a compact range [(subtree size, root), ...] (largest first),
    merging equal sizes as a binary carry: O(log n) hashes, O(log n) memory."""
    stack.append((1, h))
    while len(stack) >= 2 and stack[-1][0] == stack[-2][0]:
        (size, right), (_, left) = stack.pop(), stack.pop()
        stack.append((2 * size, node_hash(left, right)))


def compact_root(stack: Sequence[tuple[int, bytes]]) -> bytes:
    """MTH of the leaves a compact range covers (its subtree roots folded from the right)."""
    if not stack:
        return EMPTY_ROOT
    root = stack[-1][1]
    for _, h in reversed(stack[:-1]):
        root = node_hash(h, root)
    return root


def perfect_subtrees(start: int, end: int) -> list[NodeKey]:
    """Split [start, end) into maximal aligned perfect subtrees, left to right.

    Folding their hashes from the right (h = node_hash(p_i, h)) gives MTH(D[start:end]) for
    every subtree RFC 9162 proofs use: those where ``start`` is a multiple of the largest power
    of two not above ``end - start``. For other ranges the list is still the unique covering
    by aligned perfect subtrees, but the right fold is not an RFC subtree hash.
    """
    if not 0 <= start <= end:
        raise ValueError(f"perfect_subtrees: invalid range [{start}, {end})")
    out: list[NodeKey] = []
    while start < end:
        # Largest 2**level that start is aligned to and that still fits before end.
        level = (end - start).bit_length() - 1
        if start:
            level = min(level, (start & -start).bit_length() - 1)
        out.append((level, start >> level))
        start += 1 << level
    return out


def _fetch(get: NodeGetter, keys: list[NodeKey], where: str) -> dict[NodeKey, bytes]:
    """One getter call; every requested node must come back, with a hash of the right size."""
    if not keys:
        return {}
    got = get(keys)
    out: dict[NodeKey, bytes] = {}
    for key in keys:
        h = got.get(key)
        if h is None:
            raise MissingNodeError(f"node (level {key[0]}, index {key[1]}) is not stored", where=where)
        if len(h) != HASH_SIZE:
            raise MissingNodeError(
                f"node (level {key[0]}, index {key[1]}) has {len(h)} bytes, expected {HASH_SIZE}", where=where
            )
        # Database drivers may hand back memoryview/bytearray; proofs and nodes are always bytes.
        out[key] = h if type(h) is bytes else bytes(h)
    return out


def _fold(keys: Sequence[NodeKey], nodes: dict[NodeKey, bytes]) -> bytes:
    """MTH of an RFC subtree from its perfect-subtree decomposition, folding from the right."""
    h = nodes[keys[-1]]
    for key in reversed(keys[:-1]):
        h = node_hash(nodes[key], h)
    return h


def _check_hash(value: bytes, name: str) -> None:
    if not isinstance(value, (bytes, bytearray)) or len(value) != HASH_SIZE:
        raise ValueError(f"{name} must be {HASH_SIZE} bytes")


def append_nodes(size: int, leaf: bytes, get: NodeGetter) -> list[tuple[int, int, bytes]]:
    """Nodes to store when appending leaf hash ``leaf`` to a tree of ``size`` leaves.

    Returns ``(level, index, hash)`` for the leaf at (0, size) and for each perfect subtree the
    new leaf completes. Reads one left sibling per trailing 1-bit of ``size`` (one getter call)
    and computes that many hashes: O(log n).
    """
    if size < 0:
        raise ValueError(f"append_nodes: negative tree size {size}")
    _check_hash(leaf, "append_nodes: leaf hash")
    trailing_ones = ((size ^ (size + 1)).bit_length()) - 1
    keys = [(level, (size >> level) - 1) for level in range(trailing_ones)]
    left = _fetch(get, keys, f"append at size {size}")
    out = [(0, size, bytes(leaf))]
    h = bytes(leaf)
    for level, key in enumerate(keys):
        h = node_hash(left[key], h)
        out.append((level + 1, (size >> (level + 1)), h))
    return out


def append_many(size: int, leaf_hashes: Sequence[bytes], get: NodeGetter) -> list[tuple[int, int, bytes]]:
    """All new nodes for appending a batch of leaf hashes to a tree of ``size`` leaves.

    One getter call fetches the pre-existing left siblings the batch completes (at most one per
    level: the perfect subtrees of [0, size) that get a right sibling within the new size).
    Computes exactly one hash per new interior node, fewer than ``len(leaf_hashes)`` plus
    ``log2(new size)``. Nodes are returned in creation order, leaves first at each step.
    """
    if size < 0:
        raise ValueError(f"append_many: negative tree size {size}")
    new_size = size + len(leaf_hashes)
    # A frontier node (level, (size >> level) - 1) exists for each 1-bit of size; it is needed
    # only if its right sibling (level, size >> level) is complete by new_size.
    keys = [
        (level, (size >> level) - 1)
        for level in range(size.bit_length())
        if (size >> level) & 1 and ((size >> level) + 1) << level <= new_size
    ]
    fetched = _fetch(get, keys, f"append batch at size {size}")
    # pending[level]: hash of the completed node at that level whose index is even, waiting for
    # its right sibling. Fetched frontier nodes start as pending.
    pending: dict[int, bytes] = {key[0]: fetched[key] for key in keys}
    out: list[tuple[int, int, bytes]] = []
    for i, leaf in enumerate(leaf_hashes):
        _check_hash(leaf, f"append_many: leaf hash {i}")
        h = bytes(leaf)
        index = size + i
        level = 0
        out.append((0, index, h))
        while index & 1:
            h = node_hash(pending.pop(level), h)
            index >>= 1
            level += 1
            out.append((level, index, h))
        pending[level] = h
    return out


# --- roots and proofs from stored nodes -------------------------------------------------------


def root(size: int, get: NodeGetter) -> bytes:
    """MTH(D[size]) from at most popcount(size) stored nodes; popcount(size) - 1 hashes."""
    if size < 0:
        raise ValueError(f"root: negative tree size {size}")
    if size == 0:
        return EMPTY_ROOT
    keys = perfect_subtrees(0, size)
    return _fold(keys, _fetch(get, keys, f"root of size {size}"))


def _inclusion_ranges(index: int, size: int) -> list[tuple[int, int]]:
    """PATH(m, D[n]) of RFC 9162 2.1.3.1 as leaf ranges, in proof order (bottom-up)."""
    ranges: list[tuple[int, int]] = []
    start, end = 0, size
    while end - start > 1:
        k = _split(end - start)
        if index < start + k:  # PATH(m, D[0:k]) : MTH(D[k:n])
            ranges.append((start + k, end))
            end = start + k
        else:  # PATH(m - k, D[k:n]) : MTH(D[0:k])
            ranges.append((start, start + k))
            start += k
    ranges.reverse()
    return ranges


def _consistency_ranges(m: int, n: int) -> list[tuple[int, int]]:
    """PROOF(m, D[n]) = SUBPROOF(m, D[n], true) of RFC 9162 2.1.4.1 as leaf ranges, in order."""
    ranges: list[tuple[int, int]] = []
    start, end, b = 0, n, True
    while m != end - start:
        k = _split(end - start)
        if m <= k:  # SUBPROOF(m, D[0:k], b) : MTH(D[k:n])
            ranges.append((start + k, end))
            end = start + k
        else:  # SUBPROOF(m - k, D[k:n], false) : MTH(D[0:k])
            ranges.append((start, start + k))
            start += k
            m -= k
            b = False
    if not b:  # SUBPROOF(m, D[m], false) = {MTH(D[m])}
        ranges.append((start, end))
    ranges.reverse()
    return ranges


def _hashes_for_ranges(ranges: list[tuple[int, int]], get: NodeGetter, where: str) -> list[bytes]:
    """Fetch every stored node the ranges decompose into with one getter call, then fold."""
    decomposed = [perfect_subtrees(s, e) for s, e in ranges]
    keys = list(dict.fromkeys(key for keys in decomposed for key in keys))
    nodes = _fetch(get, keys, where)
    return [_fold(keys_i, nodes) for keys_i in decomposed]


def inclusion_proof(index: int, size: int, get: NodeGetter) -> list[bytes]:
    """RFC 9162 2.1.3.1 inclusion path for leaf ``index`` in the tree of ``size`` leaves."""
    if not 0 <= index < size:
        raise ProofError(f"leaf index {index} is not below tree size {size}", where="inclusion_proof")
    return _hashes_for_ranges(_inclusion_ranges(index, size), get, f"inclusion proof {index} in {size}")


def consistency_proof(m: int, n: int, get: NodeGetter) -> list[bytes]:
    """RFC 9162 2.1.4.1 consistency proof from size ``m`` to size ``n``.

    Empty when m == n and when m == 0 (the empty tree is a prefix of every tree; see
    check_consistency for how those cases verify).
    """
    if not 0 <= m <= n:
        raise ProofError(f"sizes must satisfy 0 <= m <= n, got m={m} n={n}", where="consistency_proof")
    if m == 0 or m == n:
        return []
    return _hashes_for_ranges(_consistency_ranges(m, n), get, f"consistency proof {m} to {n}")


# --- RFC 9162 2.1.3.2 / 2.1.4.2 verification --------------------------------------------------


def _inclusion_proof_length(index: int, size: int) -> int:
    """Number of PATH elements: levels below where index and size-1 diverge, plus the border."""
    inner = (index ^ (size - 1)).bit_length()
    return inner + bin(index >> inner).count("1")


def _consistency_proof_length(m: int, n: int) -> int:
    inner = ((m - 1) ^ (n - 1)).bit_length()
    border = bin((m - 1) >> inner).count("1")
    shift = (m & -m).bit_length() - 1
    return inner - shift + border + (0 if m == 1 << shift else 1)


def _require_hash(value: object, where: str) -> bytes:
    if not isinstance(value, (bytes, bytearray)):
        raise ProofError(f"expected {HASH_SIZE} bytes, got {type(value).__name__}", where=where)
    if len(value) != HASH_SIZE:
        raise ProofError(f"expected {HASH_SIZE} bytes, got {len(value)}", where=where)
    return bytes(value)


def _require_size(value: object, name: str, where: str) -> int:
    if type(value) is not int or value < 0:
        raise ProofError(f"{name} must be a non-negative integer, got {value!r}", where=where)
    return value


def check_inclusion(leaf_hash: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes) -> None:
    """Verify an inclusion proof exactly as RFC 9162 2.1.3.2 says; raise ProofError if it fails."""
    where = "inclusion proof"
    index = _require_size(index, "leaf index", where)
    size = _require_size(size, "tree size", where)
    # Step 1: leaf_index >= tree_size fails.
    if index >= size:
        raise ProofError(f"leaf index {index} is not below tree size {size}", where=where)
    leaf = _require_hash(leaf_hash, f"{where}: leaf hash")
    want_root = _require_hash(root, f"{where}: root hash")
    path = [_require_hash(p, f"{where}[{i}]") for i, p in enumerate(proof)]
    # Not an RFC step (the loop below fails the same proofs); it only makes the reason clear.
    expected = _inclusion_proof_length(index, size)
    if len(path) != expected:
        raise ProofError(
            f"proof has {len(path)} hashes, leaf {index} in a tree of {size} needs {expected}", where=where
        )
    # Steps 2-3.
    fn, sn = index, size - 1
    r = leaf
    # Step 4.
    for i, p in enumerate(path):
        if sn == 0:
            raise ProofError("proof is longer than the path to the root", where=f"{where}[{i}]")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    # Step 5.
    if sn != 0:
        raise ProofError("proof is shorter than the path to the root", where=where)
    if not compare_digest(r, want_root):
        raise ProofError(f"computed root {r.hex()} does not match root {want_root.hex()}", where=where)


def check_consistency(m: int, n: int, proof: Sequence[bytes], root_m: bytes, root_n: bytes) -> None:
    """Verify a consistency proof exactly as RFC 9162 2.1.4.2 says; raise ProofError if it fails.

    Edge cases outside the RFC's 0 < m < n: m > n always fails; m == n needs an empty proof
    and equal roots; m == 0 needs an empty proof and root_m == EMPTY_ROOT (an empty tree is a
    prefix of every tree, but a claimed empty-tree root must still be the empty-tree root).
    """
    where = "consistency proof"
    m = _require_size(m, "first size", where)
    n = _require_size(n, "second size", where)
    first = _require_hash(root_m, f"{where}: first root")
    second = _require_hash(root_n, f"{where}: second root")
    path = [_require_hash(p, f"{where}[{i}]") for i, p in enumerate(proof)]
    if m > n:
        raise ProofError(f"first size {m} is larger than second size {n}", where=where)
    if m == 0 or m == n:
        if path:
            raise ProofError(f"proof from size {m} to {n} must be empty, has {len(path)} hashes", where=where)
        if m == 0 and not compare_digest(first, EMPTY_ROOT):
            raise ProofError("first root is not the empty-tree root for size 0", where=where)
        if m == n and not compare_digest(first, second):
            raise ProofError(f"sizes are equal ({m}) but the roots differ", where=where)
        return
    # Step 1: an empty proof fails.
    if not path:
        raise ProofError(f"proof from size {m} to {n} is empty", where=where)
    # Not an RFC step (the loop below fails the same proofs); it only makes the reason clear.
    expected = _consistency_proof_length(m, n)
    if len(path) != expected:
        raise ProofError(f"proof has {len(path)} hashes, sizes {m} to {n} need {expected}", where=where)
    # Step 2: if first is an exact power of 2, prepend first_hash.
    if m & (m - 1) == 0:
        path = [first, *path]
    # Steps 3-4.
    fn, sn = m - 1, n - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    # Step 5.
    fr = sr = path[0]
    # Step 6.
    for i, c in enumerate(path[1:]):
        if sn == 0:
            raise ProofError("proof is longer than needed", where=f"{where}[{i}]")
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    # Step 7.
    if sn != 0:
        raise ProofError("proof is shorter than needed", where=where)
    if not compare_digest(fr, first):
        raise ProofError(f"computed first root {fr.hex()} does not match {first.hex()}", where=where)
    if not compare_digest(sr, second):
        raise ProofError(f"computed second root {sr.hex()} does not match {second.hex()}", where=where)


def verify_inclusion(leaf_hash: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes) -> bool:
    """True iff check_inclusion accepts the proof."""
    try:
        check_inclusion(leaf_hash, index, size, proof, root)
    except ProofError:
        return False
    return True


def verify_consistency(m: int, n: int, proof: Sequence[bytes], root_m: bytes, root_n: bytes) -> bool:
    """True iff check_consistency accepts the proof."""
    try:
        check_consistency(m, n, proof, root_m, root_n)
    except ProofError:
        return False
    return True


# --- in-memory store --------------------------------------------------------------------------


class MemoryNodeStore:
    """In-memory node store for tests, verifier agreement tests and benchmarks.

    Nodes are kept in one list per level indexed by node index (rather than a dict keyed by
    (level, index)): appends only ever add the next index of a level, and lists hold a
    million-leaf tree in a fraction of the memory. ``get`` has the getter interface.
    """

    def __init__(self) -> None:
        self.levels: list[list[bytes]] = []
        self.reads = 0  # nodes returned by get(), for the cost figures in docs/merkle.md
        self.calls = 0

    def put(self, nodes: Iterable[tuple[int, int, bytes]]) -> None:
        levels = self.levels
        for level, index, h in nodes:
            while len(levels) <= level:
                levels.append([])
            row = levels[level]
            if index == len(row):
                row.append(h)
            elif index < len(row):
                if row[index] != h:
                    raise LedgerError(
                        f"node (level {level}, index {index}) already stored with a different hash",
                        where="MemoryNodeStore.put",
                        code="merkle_node_conflict",
                    )
            else:
                raise LedgerError(
                    f"node (level {level}, index {index}) skips index {len(row)}",
                    where="MemoryNodeStore.put",
                    code="merkle_node_gap",
                )

    def get(self, keys: list[NodeKey]) -> dict[NodeKey, bytes]:
        self.calls += 1
        out: dict[NodeKey, bytes] = {}
        levels = self.levels
        for level, index in keys:
            if level < len(levels) and 0 <= index < len(levels[level]):
                out[(level, index)] = levels[level][index]
        self.reads += len(out)
        return out


class InMemoryTree:
    """An append-only RFC 9162 log over a MemoryNodeStore, using the same functions as storage."""

    def __init__(self) -> None:
        self.store = MemoryNodeStore()
        self.size = 0

    def append(self, entry: bytes) -> int:
        """Append an entry (hashed as a leaf); return its index."""
        return self.append_leaf_hash(leaf_hash(entry))

    def append_leaf_hash(self, h: bytes) -> int:
        self.store.put(append_nodes(self.size, h, self.store.get))
        self.size += 1
        return self.size - 1

    def extend(self, entries: Iterable[bytes]) -> int:
        """Append entries as one batch; return the new size."""
        return self.extend_leaf_hashes([leaf_hash(e) for e in entries])

    def extend_leaf_hashes(self, hashes: Sequence[bytes]) -> int:
        self.store.put(append_many(self.size, hashes, self.store.get))
        self.size += len(hashes)
        return self.size

    def leaf_hash(self, index: int) -> bytes:
        if not 0 <= index < self.size:
            raise ProofError(f"leaf index {index} is not below tree size {self.size}", where="InMemoryTree")
        return self.store.levels[0][index]

    def _size(self, size: int | None) -> int:
        size = self.size if size is None else size
        if not 0 <= size <= self.size:
            raise ProofError(f"tree size {size} is beyond the current size {self.size}", where="InMemoryTree")
        return size

    def root(self, size: int | None = None) -> bytes:
        return root(self._size(size), self.store.get)

    def inclusion_proof(self, index: int, size: int | None = None) -> list[bytes]:
        return inclusion_proof(index, self._size(size), self.store.get)

    def consistency_proof(self, m: int, n: int | None = None) -> list[bytes]:
        return consistency_proof(m, self._size(n), self.store.get)
