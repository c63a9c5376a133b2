"""Known-answer and edge-case tests for ledger.merkle (RFC 9162 section 2.1)."""

from __future__ import annotations

import hashlib

import pytest

from rlhf_ledger.core.errors import ProofError
from rlhf_ledger.core.merkle import (
    EMPTY_ROOT,
    InMemoryTree,
    MemoryNodeStore,
    MissingNodeError,
    append_many,
    append_nodes,
    check_consistency,
    check_inclusion,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    node_hash,
    perfect_subtrees,
    root,
    root_from_leaf_hashes,
    verify_consistency,
    verify_inclusion,
)

# Known-answer vectors from transparency-dev/merkle, proof/verify_test.go (the same tree and
# proofs as google/certificate-transparency's merkle_tree_test.cc): the 8 CT test leaves, the
# roots of the trees of sizes 1..8, and reference inclusion and consistency proofs.
# In that file inclusion vectors use 1-based leaf numbers; they are converted to 0-based here.
CT_LEAVES = [
    bytes.fromhex(h)
    for h in ["", "00", "10", "2021", "3031", "40414243", "5051525354555657", "606162636465666768696a6b6c6d6e6f"]
]
CT_ROOTS = {
    1: "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    2: "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    3: "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    4: "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    5: "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    6: "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    7: "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    8: "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
}
CT_INCLUSION = [  # (0-based index, size, path)
    (0, 1, []),
    (
        0,
        8,
        [
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        5,
        8,
        [
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (2, 3, ["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"]),
    (
        1,
        5,
        [
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
]
CT_CONSISTENCY = [  # (m, n, proof)
    (1, 1, []),
    (
        1,
        8,
        [
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        6,
        8,
        [
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (
        2,
        5,
        [
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
    (
        6,
        7,
        [
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
]


def _hx(hashes: list[bytes]) -> list[str]:
    return [h.hex() for h in hashes]


@pytest.fixture(scope="module")
def ct_tree() -> InMemoryTree:
    tree = InMemoryTree()
    for entry in CT_LEAVES:
        tree.append(entry)
    return tree


# --- hashing ---------------------------------------------------------------------------------


def test_hash_primitives_follow_rfc_9162() -> None:
    assert EMPTY_ROOT.hex() == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    assert leaf_hash(b"abc") == hashlib.sha256(b"\x00abc").digest()
    left, right = b"\x11" * 32, b"\x22" * 32
    assert node_hash(left, right) == hashlib.sha256(b"\x01" + left + right).digest()
    # Domain separation: a leaf whose entry is 0x01||l||r must not collide with the node.
    assert leaf_hash(b"\x01" + left + right) != node_hash(left, right)
    assert root_from_leaf_hashes([]) == EMPTY_ROOT


@pytest.mark.parametrize("size", sorted(CT_ROOTS))
def test_ct_roots(size: int, ct_tree: InMemoryTree) -> None:
    hashes = [leaf_hash(e) for e in CT_LEAVES[:size]]
    assert root_from_leaf_hashes(hashes).hex() == CT_ROOTS[size]
    assert ct_tree.root(size).hex() == CT_ROOTS[size]


def test_ct_leaf_hashes_match_published_proof_elements() -> None:
    # The level-0 siblings in the CT proofs are leaf hashes of the CT leaves.
    assert leaf_hash(CT_LEAVES[1]).hex() == "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7"
    assert leaf_hash(CT_LEAVES[4]).hex() == "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"


@pytest.mark.parametrize("index,size,path", CT_INCLUSION)
def test_ct_inclusion_vectors(index: int, size: int, path: list[str], ct_tree: InMemoryTree) -> None:
    proof = ct_tree.inclusion_proof(index, size)
    assert _hx(proof) == path
    root_hash = bytes.fromhex(CT_ROOTS[size])
    assert verify_inclusion(leaf_hash(CT_LEAVES[index]), index, size, [bytes.fromhex(p) for p in path], root_hash)


@pytest.mark.parametrize("m,n,path", CT_CONSISTENCY)
def test_ct_consistency_vectors(m: int, n: int, path: list[str], ct_tree: InMemoryTree) -> None:
    proof = ct_tree.consistency_proof(m, n)
    assert _hx(proof) == path
    assert verify_consistency(m, n, [bytes.fromhex(p) for p in path], bytes.fromhex(CT_ROOTS[m]), bytes.fromhex(CT_ROOTS[n]))


# --- stored-node model -----------------------------------------------------------------------


def test_perfect_subtrees_decomposition() -> None:
    assert perfect_subtrees(0, 0) == []
    assert perfect_subtrees(0, 8) == [(3, 0)]
    assert perfect_subtrees(0, 7) == [(2, 0), (1, 2), (0, 6)]
    assert perfect_subtrees(4, 7) == [(1, 2), (0, 6)]
    assert perfect_subtrees(8, 14) == [(2, 2), (1, 6)]
    assert perfect_subtrees(1, 5) == [(0, 1), (1, 1), (0, 4)]  # general range, not an RFC subtree
    with pytest.raises(ValueError):
        perfect_subtrees(5, 4)


def test_perfect_subtrees_fold_gives_rfc_subtree_hash() -> None:
    hashes = [leaf_hash(i.to_bytes(2, "big")) for i in range(70)]
    tree = InMemoryTree()
    tree.extend_leaf_hashes(hashes)
    for start in range(70):
        for end in range(start + 1, 71):
            width = end - start
            if start % (1 << (width.bit_length() - 1)):
                continue  # not a subtree that RFC 9162 proofs use
            keys = perfect_subtrees(start, end)
            nodes = tree.store.get(keys)
            h = nodes[keys[-1]]
            for key in reversed(keys[:-1]):
                h = node_hash(nodes[key], h)
            assert h == root_from_leaf_hashes(hashes[start:end]), (start, end)


def test_append_nodes_stores_leaf_and_completed_parents() -> None:
    store = MemoryNodeStore()
    hashes = [leaf_hash(bytes([i])) for i in range(8)]
    for i in range(7):
        store.put(append_nodes(i, hashes[i], store.get))
    new = append_nodes(7, hashes[7], store.get)
    assert [(lvl, idx) for lvl, idx, _ in new] == [(0, 7), (1, 3), (2, 1), (3, 0)]
    assert new[-1][2] == root_from_leaf_hashes(hashes)
    # Appending at an even size completes no parent and reads nothing.
    calls = store.calls
    assert [(lvl, idx) for lvl, idx, _ in append_nodes(8, hashes[0], store.get)] == [(0, 8)]
    assert store.calls == calls


def test_append_many_uses_one_get_and_matches_single_appends() -> None:
    hashes = [leaf_hash(i.to_bytes(2, "big")) for i in range(1100)]
    single = MemoryNodeStore()
    for i, h in enumerate(hashes):
        single.put(append_nodes(i, h, single.get))
    batched = MemoryNodeStore()
    batched.put(append_many(0, hashes[:77], batched.get))
    before = batched.calls
    batched.put(append_many(77, hashes[77:], batched.get))
    assert batched.calls == before + 1
    assert batched.levels == single.levels
    assert root(1100, batched.get) == root_from_leaf_hashes(hashes)


def test_missing_node_is_reported_with_its_key() -> None:
    tree = InMemoryTree()
    tree.extend([b"a", b"b", b"c"])

    def lossy(keys: list[tuple[int, int]]) -> dict[tuple[int, int], bytes]:
        got = tree.store.get(keys)
        got.pop((1, 0), None)
        return got

    with pytest.raises(MissingNodeError, match=r"node \(level 1, index 0\) is not stored"):
        root(3, lossy)
    with pytest.raises(MissingNodeError) as info:
        inclusion_proof(2, 3, lossy)
    assert info.value.where == "inclusion proof 2 in 3"
    with pytest.raises(MissingNodeError):
        append_nodes(3, leaf_hash(b"d"), lossy)


def test_proofs_read_stored_nodes_with_one_get_call() -> None:
    tree = InMemoryTree()
    tree.extend([i.to_bytes(4, "big") for i in range(1000)])
    for call in (lambda: tree.inclusion_proof(3, 999), lambda: tree.consistency_proof(333, 999), lambda: tree.root(999)):
        tree.store.calls = 0
        call()
        assert tree.store.calls == 1


def test_memory_store_rejects_gaps_and_conflicts() -> None:
    store = MemoryNodeStore()
    store.put([(0, 0, b"\x00" * 32)])
    store.put([(0, 0, b"\x00" * 32)])  # idempotent rewrite of the same hash is allowed
    with pytest.raises(Exception, match="different hash"):
        store.put([(0, 0, b"\x01" * 32)])
    with pytest.raises(Exception, match="skips index"):
        store.put([(0, 5, b"\x00" * 32)])


# --- edge cases of generation and verification -----------------------------------------------


def test_inclusion_edge_cases(ct_tree: InMemoryTree) -> None:
    r8 = ct_tree.root(8)
    with pytest.raises(ProofError, match="not below tree size"):
        ct_tree.inclusion_proof(8, 8)
    with pytest.raises(ProofError, match="not below tree size"):
        check_inclusion(leaf_hash(b""), 8, 8, [], r8)
    with pytest.raises(ProofError, match="not below tree size"):
        check_inclusion(leaf_hash(b""), 0, 0, [], EMPTY_ROOT)
    # A single-leaf tree: the root is the leaf hash and the proof is empty.
    h = leaf_hash(b"data")
    assert verify_inclusion(h, 0, 1, [], h)
    assert not verify_inclusion(h, 0, 1, [], EMPTY_ROOT)
    assert not verify_inclusion(b"", 0, 1, [], h)
    proof = ct_tree.inclusion_proof(5, 8)
    with pytest.raises(ProofError, match="proof has 2 hashes, leaf 5 in a tree of 8 needs 3"):
        check_inclusion(leaf_hash(CT_LEAVES[5]), 5, 8, proof[:2], r8)
    with pytest.raises(ProofError, match=r"inclusion proof\[1\]: expected 32 bytes, got 31"):
        check_inclusion(leaf_hash(CT_LEAVES[5]), 5, 8, [proof[0], proof[1][:31], proof[2]], r8)
    with pytest.raises(ProofError, match="does not match root"):
        check_inclusion(leaf_hash(CT_LEAVES[4]), 5, 8, proof, r8)
    with pytest.raises(ProofError, match="non-negative integer"):
        check_inclusion(leaf_hash(CT_LEAVES[5]), -1, 8, proof, r8)


def test_consistency_edge_cases(ct_tree: InMemoryTree) -> None:
    r = {n: ct_tree.root(n) for n in range(0, 9)}
    assert r[0] == EMPTY_ROOT
    # m == n: empty proof and equal roots.
    assert ct_tree.consistency_proof(5, 5) == []
    assert verify_consistency(5, 5, [], r[5], r[5])
    with pytest.raises(ProofError, match="roots differ"):
        check_consistency(5, 5, [], r[5], r[6])
    with pytest.raises(ProofError, match="must be empty"):
        check_consistency(5, 5, [r[5]], r[5], r[5])
    # m == 0: the empty tree is a prefix of every tree; its root must be EMPTY_ROOT.
    assert ct_tree.consistency_proof(0, 8) == []
    assert verify_consistency(0, 8, [], EMPTY_ROOT, r[8])
    assert verify_consistency(0, 0, [], EMPTY_ROOT, EMPTY_ROOT)
    with pytest.raises(ProofError, match="empty-tree root"):
        check_consistency(0, 8, [], r[1], r[8])
    with pytest.raises(ProofError, match="must be empty"):
        check_consistency(0, 8, [EMPTY_ROOT], EMPTY_ROOT, r[8])
    # m > n fails; so does an empty proof for m < n and a wrong length.
    with pytest.raises(ProofError, match="larger than second size"):
        check_consistency(8, 7, [], r[8], r[7])
    with pytest.raises(ProofError, match="sizes must satisfy"):
        ct_tree.consistency_proof(8, 7)
    with pytest.raises(ProofError, match="is empty"):
        check_consistency(1, 2, [], r[1], r[2])
    proof = ct_tree.consistency_proof(6, 8)
    with pytest.raises(ProofError, match="proof has 4 hashes, sizes 6 to 8 need 3"):
        check_consistency(6, 8, [*proof, r[8]], r[6], r[8])
    with pytest.raises(ProofError, match="first root"):
        check_consistency(6, 8, proof, r[5], r[8])
    with pytest.raises(ProofError, match="second root"):
        check_consistency(6, 8, proof, r[6], r[7])


def test_in_memory_tree_rejects_sizes_beyond_current(ct_tree: InMemoryTree) -> None:
    with pytest.raises(ProofError, match="beyond the current size"):
        ct_tree.root(9)
    with pytest.raises(ProofError, match="beyond the current size"):
        ct_tree.consistency_proof(3, 9)


def test_inclusion_proof_does_not_bind_tree_size_on_its_own(ct_tree: InMemoryTree) -> None:
    # RFC 9162 verification depends only on the left/right shape of the path: leaf 0's proof
    # in the tree of 8 has the same shape for sizes 5..8, so it also verifies as "size 7"
    # against the size-8 root. The size is bound by the signed checkpoint (size, root) pair,
    # never by the proof; callers must take both from the same checkpoint.
    proof, r8 = ct_tree.inclusion_proof(0, 8), ct_tree.root(8)
    leaf0 = leaf_hash(CT_LEAVES[0])
    assert [s for s in range(1, 17) if verify_inclusion(leaf0, 0, s, proof, r8)] == [5, 6, 7, 8]


def test_proof_node_reads_stay_within_documented_bounds() -> None:
    # docs/merkle.md section 5: inclusion reads <= 2*ceil(log2 n), consistency <= that + 1,
    # and proof lengths <= ceil(log2 n) (+1 for consistency).
    tree = InMemoryTree()
    tree.extend([i.to_bytes(2, "big") for i in range(600)])
    for n in range(2, 601, 7):
        lg = (n - 1).bit_length()
        for i in range(0, n, max(1, n // 9)):
            tree.store.reads = 0
            assert len(tree.inclusion_proof(i, n)) <= lg
            assert tree.store.reads <= 2 * lg
        for m in range(1, n, max(1, n // 9)):
            tree.store.reads = 0
            assert len(tree.consistency_proof(m, n)) <= lg + 1
            assert tree.store.reads <= 2 * lg + 1


def test_getter_may_return_memoryviews() -> None:
    # SQL drivers can return BLOB/bytea columns as memoryview; results must still be bytes.
    tree = InMemoryTree()
    tree.extend([b"a", b"b", b"c", b"d", b"e"])

    def as_views(keys: list[tuple[int, int]]) -> dict[tuple[int, int], bytes]:
        return {k: memoryview(v) for k, v in tree.store.get(keys).items()}  # type: ignore[misc]

    proof = inclusion_proof(4, 5, as_views)
    assert all(type(p) is bytes for p in proof)
    assert verify_inclusion(tree.leaf_hash(4), 4, 5, proof, root(5, as_views))
    assert all(type(p) is bytes for p in consistency_proof(3, 5, as_views))
    assert all(type(h) is bytes for _, _, h in append_many(5, [leaf_hash(b"f"), leaf_hash(b"g")], as_views))
