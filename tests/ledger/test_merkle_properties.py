"""Property tests for ledger.merkle: random sizes and indices, tampering, and pymerkle as an oracle.

pymerkle 7.0.0 is an independent implementation. With ``disable_security=False`` its hasher
prepends 0x00 to leaves and 0x01 to node pairs (checked below), i.e. RFC 9162 hashing, so roots
must agree byte for byte. Its inclusion path is ``[leaf hash] + RFC 9162 PATH``. Its consistency
proofs have a different shape from RFC 9162 (it descends right when m equals the split point), so
for consistency it serves as an oracle of roots: each side's proofs must verify against the
other side's roots.
"""

from __future__ import annotations

import itertools

import pymerkle
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from rlhf_ledger.core.merkle import (
    InMemoryTree,
    MemoryNodeStore,
    append_many,
    append_nodes,
    leaf_hash,
    root,
    root_from_leaf_hashes,
    verify_consistency,
    verify_inclusion,
)

MAX = 3000
SETTINGS = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _entry(i: int) -> bytes:
    return b"entry-" + i.to_bytes(4, "big")


@pytest.fixture(scope="module")
def trees() -> tuple[InMemoryTree, pymerkle.InmemoryTree]:
    # A log's prefixes are trees in their own right: root(n) and proofs for size n read only
    # nodes inside [0, n), so one 3000-leaf log serves every size up to 3000.
    ours = InMemoryTree()
    ours.extend([_entry(i) for i in range(MAX)])
    oracle = pymerkle.InmemoryTree(algorithm="sha256", disable_security=False)
    oracle.append_entries([_entry(i) for i in range(MAX)])
    return ours, oracle


def _flip(h: bytes, pos: int, mask: int) -> bytes:
    b = bytearray(h)
    b[pos % len(b)] ^= mask
    return bytes(b)


# Independent restatements of RFC 9162 2.1.3.1 / 2.1.4.1 as recursion, giving only the *shape*
# of a proof: for each element, which side it is hashed on (and, for consistency, whether it
# also feeds the first root). Verification does the same computation for two (index, size) or
# (m, n) pairs exactly when their shapes are equal, so a proof moved to other sizes must
# verify iff the shapes match. (Inclusion proofs do not bind the size alone: leaf 0's proof in
# a tree of 8 also "verifies" as leaf 0 of 7 against the same root, as RFC 9162 allows.)
def _split(n: int) -> int:
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def _path_shape(m: int, n: int) -> list[str]:
    if n == 1:
        return []
    k = _split(n)
    return _path_shape(m, k) + ["right"] if m < k else _path_shape(m - k, n - k) + ["left"]


def _subproof_shape(m: int, n: int, b: bool) -> list[str]:
    if m == n:
        return [] if b else ["seed"]
    k = _split(n)
    return _subproof_shape(m, k, b) + ["right"] if m <= k else _subproof_shape(m - k, n - k, False) + ["left"]


def test_pymerkle_is_configured_with_rfc_9162_prefixes() -> None:
    tree = pymerkle.InmemoryTree(algorithm="sha256", disable_security=False)
    assert (tree.leaf_prefix, tree.node_prefix) == (b"\x00", b"\x01")
    tree.append_entry(b"x")
    assert tree.get_root(1) == leaf_hash(b"x")


@SETTINGS
@given(data=st.data())
def test_inclusion_agrees_with_pymerkle_and_verifies(data: st.DataObject, trees) -> None:
    ours, oracle = trees
    size = data.draw(st.integers(1, MAX), label="size")
    index = data.draw(st.integers(0, size - 1), label="index")
    proof = ours.inclusion_proof(index, size)
    root_hash = ours.root(size)
    assert root_hash == oracle.get_root(size)
    theirs = oracle.prove_inclusion(index + 1, size)
    assert theirs.path == [ours.leaf_hash(index), *proof]
    assert verify_inclusion(ours.leaf_hash(index), index, size, proof, root_hash)
    # And the oracle accepts our root for its proof.
    pymerkle.verify_inclusion(ours.leaf_hash(index), root_hash, theirs, index=index + 1, size=size)


@pytest.mark.slow
@SETTINGS
@given(data=st.data())
def test_tampered_inclusion_fails(data: st.DataObject, trees) -> None:
    ours, _ = trees
    size = data.draw(st.integers(2, MAX), label="size")
    index = data.draw(st.integers(0, size - 1), label="index")
    proof = ours.inclusion_proof(index, size)
    leaf, root_hash = ours.leaf_hash(index), ours.root(size)
    pos, mask = data.draw(st.integers(0, 31), label="byte"), data.draw(st.integers(1, 255), label="mask")
    i = data.draw(st.integers(0, len(proof) - 1), label="element")
    bad = list(proof)
    bad[i] = _flip(bad[i], pos, mask)
    assert not verify_inclusion(leaf, index, size, bad, root_hash)
    assert not verify_inclusion(_flip(leaf, pos, mask), index, size, proof, root_hash)
    assert not verify_inclusion(leaf, index, size, proof, _flip(root_hash, pos, mask))
    assert not verify_inclusion(leaf, index, size, proof[:-1], root_hash)
    assert not verify_inclusion(leaf, index, size, [*proof, root_hash], root_hash)
    assert not verify_inclusion(leaf, index, size, [root_hash, *proof], root_hash)
    other_index = data.draw(st.integers(0, 2 * size).filter(lambda j: j != index), label="other index")
    expect = other_index < size and _path_shape(other_index, size) == _path_shape(index, size)
    assert verify_inclusion(leaf, other_index, size, proof, root_hash) == expect
    other_size = data.draw(st.integers(0, 2 * size).filter(lambda s: s != size), label="other size")
    expect = index < other_size and _path_shape(index, other_size) == _path_shape(index, size)
    assert verify_inclusion(leaf, index, other_size, proof, root_hash) == expect


@SETTINGS
@given(data=st.data())
def test_consistency_verifies_and_agrees_with_pymerkle_roots(data: st.DataObject, trees) -> None:
    ours, oracle = trees
    n = data.draw(st.integers(1, MAX), label="n")
    m = data.draw(st.integers(0, n), label="m")
    proof = ours.consistency_proof(m, n)
    root_m, root_n = ours.root(m), ours.root(n)
    assert root_m == oracle.get_root(m) and root_n == oracle.get_root(n)
    assert verify_consistency(m, n, proof, root_m, root_n)
    if m > 0:
        theirs = oracle.prove_consistency(m, n)
        pymerkle.verify_consistency(root_m, root_n, theirs, prior_size=m, later_size=n)
        assert theirs.retrieve_prior_state() == root_m


@pytest.mark.slow
@SETTINGS
@given(data=st.data())
def test_tampered_consistency_fails(data: st.DataObject, trees) -> None:
    ours, _ = trees
    n = data.draw(st.integers(2, MAX), label="n")
    m = data.draw(st.integers(1, n - 1), label="m")
    proof = ours.consistency_proof(m, n)
    root_m, root_n = ours.root(m), ours.root(n)
    pos, mask = data.draw(st.integers(0, 31), label="byte"), data.draw(st.integers(1, 255), label="mask")
    i = data.draw(st.integers(0, len(proof) - 1), label="element")
    bad = list(proof)
    bad[i] = _flip(bad[i], pos, mask)
    assert not verify_consistency(m, n, bad, root_m, root_n)
    assert not verify_consistency(m, n, proof, _flip(root_m, pos, mask), root_n)
    assert not verify_consistency(m, n, proof, root_m, _flip(root_n, pos, mask))
    assert not verify_consistency(m, n, proof, root_n, root_m)
    assert not verify_consistency(m, n, proof[:-1], root_m, root_n)
    assert not verify_consistency(m, n, [*proof, root_n], root_m, root_n)
    assert not verify_consistency(m, n, [proof[0], *proof], root_m, root_n)
    other_m = data.draw(st.integers(0, 2 * n).filter(lambda x: x != m), label="other m")
    expect = 0 < other_m < n and _subproof_shape(other_m, n, True) == _subproof_shape(m, n, True)
    assert verify_consistency(other_m, n, proof, root_m, root_n) == expect
    other_n = data.draw(st.integers(0, 2 * n).filter(lambda x: x != n), label="other n")
    expect = m < other_n and _subproof_shape(m, other_n, True) == _subproof_shape(m, n, True)
    assert verify_consistency(m, other_n, proof, root_m, root_n) == expect


@settings(max_examples=60, deadline=None)
@given(
    entries=st.lists(st.binary(max_size=40), min_size=0, max_size=300),
    cuts=st.lists(st.integers(0, 300), max_size=6),
)
def test_append_many_equals_append_nodes_equals_reference(entries: list[bytes], cuts: list[int]) -> None:
    hashes = [leaf_hash(e) for e in entries]
    single = MemoryNodeStore()
    for i, h in enumerate(hashes):
        single.put(append_nodes(i, h, single.get))
    batched = MemoryNodeStore()
    bounds = sorted({0, len(hashes), *(c for c in cuts if c <= len(hashes))})
    for lo, hi in itertools.pairwise(bounds):
        calls = batched.calls
        batched.put(append_many(lo, hashes[lo:hi], batched.get))
        assert batched.calls - calls <= 1
    assert batched.levels == single.levels
    for size in range(len(hashes) + 1):
        assert root(size, batched.get) == root_from_leaf_hashes(hashes[:size])
    oracle = pymerkle.InmemoryTree(algorithm="sha256", disable_security=False)
    oracle.append_entries(entries)
    assert root(len(hashes), batched.get) == oracle.get_root()


@settings(max_examples=40, deadline=None)
@given(entries=st.lists(st.binary(max_size=16), min_size=1, max_size=64), data=st.data())
def test_proofs_on_random_entries(entries: list[bytes], data: st.DataObject) -> None:
    tree = InMemoryTree()
    tree.extend(entries)
    n = len(entries)
    index = data.draw(st.integers(0, n - 1))
    m = data.draw(st.integers(0, n))
    hashes = [leaf_hash(e) for e in entries]
    assert verify_inclusion(hashes[index], index, n, tree.inclusion_proof(index, n), root_from_leaf_hashes(hashes))
    assert verify_consistency(
        m, n, tree.consistency_proof(m, n), root_from_leaf_hashes(hashes[:m]), root_from_leaf_hashes(hashes)
    )


def test_exhaustive_small_trees(trees) -> None:
    ours, _ = trees
    roots = [ours.root(n) for n in range(0, 65)]
    for n in range(1, 65):
        for index in range(n):
            assert verify_inclusion(ours.leaf_hash(index), index, n, ours.inclusion_proof(index, n), roots[n])
        for m in range(0, n + 1):
            assert verify_consistency(m, n, ours.consistency_proof(m, n), roots[m], roots[n])
