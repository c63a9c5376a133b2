"""RFC 9162 logs for contract tests: real roots and consistency proofs for what tests anchor.

The contract accepts a new root only with a consistency proof from the anchored one
(docs/contract.md), so tests that anchor directly (not through the worker) build the roots and
proofs here with the ledger's Merkle code. `synthetic_consistency` makes a proof and the two
roots it implies for sizes no test can build a tree of (2^40), for gas figures.
"""

from __future__ import annotations

import hashlib
import os

from rlhf_ledger.anchoring.chain import ChainClient, log_id_for_origin
from rlhf_ledger.core import merkle
from rlhf_ledger.core.merkle import InMemoryTree

LOG_KEY = hashlib.sha256(b"test log key").digest()  # 32 bytes: what registerLog records


def registered(client: ChainClient, origin: str, key: bytes = LOG_KEY) -> bytes:
    """Register `origin` on the contract (owner client) and return its log id."""
    client.wait_for_receipt(client.register_log(origin, key))
    return log_id_for_origin(origin)


class SimLog:
    def __init__(self, origin: str):
        self.origin = origin
        self.log_id = log_id_for_origin(origin)
        self.tree = InMemoryTree()
        self.anchored = 0

    def register(self, client: ChainClient, key: bytes = LOG_KEY) -> dict:
        return client.wait_for_receipt(client.register_log(self.origin, key))

    def root(self, size: int) -> bytes:
        self._grow(size)
        return self.tree.root(size)

    def _grow(self, size: int) -> None:
        if size > self.tree.size:
            self.tree.extend([b"%s entry %d" % (self.origin.encode(), i) for i in range(self.tree.size, size)])

    def proof(self, size: int) -> list[bytes]:
        self._grow(size)
        return self.tree.consistency_proof(self.anchored, size) if 0 < self.anchored < size else []

    def anchor(self, client: ChainClient, size: int, cid: str = "cid") -> str:
        tx = client.anchor(self.log_id, size, self.root(size), cid, self.proof(size))
        self.anchored = size
        return tx


def roots_from_consistency_proof(m: int, n: int, proof: list[bytes], first: bytes) -> tuple[bytes, bytes]:
    """(root of size m, root of size n) that `proof` proves consistent (RFC 9162 2.1.4.2 run
    forwards); `first` is the old root when m is a power of two (then it heads the path)."""
    path = ([first] if m & (m - 1) == 0 else []) + list(proof)
    fn, sn = m - 1, n - 1
    while fn & 1:
        fn, sn = fn >> 1, sn >> 1
    fr = sr = path[0]
    for c in path[1:]:
        if fn & 1 or fn == sn:
            fr, sr = merkle.node_hash(c, fr), merkle.node_hash(c, sr)
            while fn and not fn & 1:
                fn, sn = fn >> 1, sn >> 1
        else:
            sr = merkle.node_hash(sr, c)
        fn, sn = fn >> 1, sn >> 1
    return fr, sr


def synthetic_consistency(m: int, n: int) -> tuple[bytes, bytes, list[bytes]]:
    """(root_m, root_n, proof) for any 0 < m < n: random proof hashes and the roots they imply."""
    length = merkle._consistency_proof_length(m, n)  # the RFC's proof length
    proof = [os.urandom(32) for _ in range(length)]
    first = os.urandom(32)
    root_m, root_n = roots_from_consistency_proof(m, n, proof, first)
    if m & (m - 1) == 0:
        root_m = first
    merkle.check_consistency(m, n, proof, root_m, root_n)  # the ledger's own checker agrees
    return root_m, root_n, proof
