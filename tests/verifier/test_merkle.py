import hashlib

import pytest
from pymerkle import InmemoryTree

from rlhf_verifier.merkle import (
    EMPTY_ROOT,
    CompactRange,
    ProofError,
    leaf_hash,
    root_from_inclusion,
    verify_consistency,
    verify_inclusion,
)


def mth(leaves):
    """RFC 9162 2.1.1 MTH, straight from the definition."""
    if not leaves:
        return hashlib.sha256(b"").digest()
    if len(leaves) == 1:
        return leaf_hash(leaves[0])
    k = 1
    while k * 2 < len(leaves):
        k *= 2
    return hashlib.sha256(b"\x01" + mth(leaves[:k]) + mth(leaves[k:])).digest()


def path(m, leaves):
    """RFC 9162 2.1.3.1 PATH(m, D[n])."""
    n = len(leaves)
    if n == 1:
        return []
    k = 1
    while k * 2 < n:
        k *= 2
    if m < k:
        return path(m, leaves[:k]) + [mth(leaves[k:])]
    return path(m - k, leaves[k:]) + [mth(leaves[:k])]


def subproof(m, leaves, b):
    n = len(leaves)
    if m == n:
        return [] if b else [mth(leaves)]
    k = 1
    while k * 2 < n:
        k *= 2
    if m <= k:
        return subproof(m, leaves[:k], b) + [mth(leaves[k:])]
    return subproof(m - k, leaves[k:], False) + [mth(leaves[:k])]


LEAVES = [b"entry %d" % i for i in range(33)]


def test_ct_known_answer_roots():
    # RFC 6962 / CT reference test vectors (merkle_tree_test.cc) for the 8 standard inputs
    inputs = [bytes.fromhex(x) for x in ["", "00", "10", "2021", "3031", "40414243", "5051525354555657",
                                          "606162636465666768696a6b6c6d6e6f"]]
    roots = ["6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
             "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
             "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
             "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
             "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
             "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
             "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
             "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328"]
    cr = CompactRange()
    for i, e in enumerate(inputs):
        cr.append(leaf_hash(e))
        assert cr.root().hex() == roots[i]
    assert EMPTY_ROOT.hex() == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


def test_compact_range_matches_definition_and_pymerkle():
    cr = CompactRange()
    t = InmemoryTree(algorithm="sha256")
    for i, e in enumerate(LEAVES):
        cr.append(leaf_hash(e))
        t.append_entry(e)
        assert cr.root() == mth(LEAVES[: i + 1]) == t.get_root()


def test_inclusion_all_positions_and_tamper():
    for n in range(1, len(LEAVES) + 1):
        root = mth(LEAVES[:n])
        for m in range(n):
            p = path(m, LEAVES[:n])
            verify_inclusion(m, n, leaf_hash(LEAVES[m]), p, root)
            with pytest.raises(ProofError):
                verify_inclusion(m, n, leaf_hash(b"other"), p, root)
            if p:
                with pytest.raises(ProofError):
                    root_from_inclusion(m, n, leaf_hash(LEAVES[m]), p[:-1])
                with pytest.raises(ProofError):
                    verify_inclusion(m, n, leaf_hash(LEAVES[m]), p[:-1] + [b"\x00" * 32], root)
            with pytest.raises(ProofError):
                root_from_inclusion(m, n, leaf_hash(LEAVES[m]), p + [b"\x00" * 32])
    with pytest.raises(ProofError):
        root_from_inclusion(5, 5, b"\x00" * 32, [])


def test_consistency_all_pairs_and_tamper():
    for n in range(1, 20):
        for m in range(0, n + 1):
            proof = [] if m in (0, n) else subproof(m, LEAVES[:n], True)
            r1, r2 = mth(LEAVES[:m]), mth(LEAVES[:n])
            verify_consistency(m, n, r1, r2, proof)
            if 0 < m < n:
                with pytest.raises(ProofError):
                    verify_consistency(m, n, r1, mth(LEAVES[1 : n + 1]), proof)
                with pytest.raises(ProofError):
                    verify_consistency(m, n, r1, r2, proof[:-1])
                bad = list(proof)
                bad[0] = b"\x01" * 32
                with pytest.raises(ProofError):
                    verify_consistency(m, n, r1, r2, bad)
    with pytest.raises(ProofError):
        verify_consistency(4, 3, b"", b"", [])
    with pytest.raises(ProofError):
        verify_consistency(3, 3, mth(LEAVES[:3]), mth(LEAVES[1:4]), [])
