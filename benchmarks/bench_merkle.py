"""Benchmark ledger.merkle on an in-memory tree: batch appends and proof generation.

Prints measured figures only (no assertions). Usage:
    .venv/bin/python benchmarks/bench_merkle.py [--leaves 1000000] [--proofs 20000]
Baseline (2-core test machine, CPython 3.11) is printed beside each figure; see docs/merkle.md.
"""

from __future__ import annotations

import argparse
import random
import time

from rlhf_ledger.core.merkle import InMemoryTree, leaf_hash, verify_consistency, verify_inclusion

# Measured with the defaults (1,000,000 leaves, 20,000 random proofs) on the 2-core dev machine.
BASELINE = {
    "append_many_per_leaf_us": 1.48,
    "inclusion_proof_us": 39.2,
    "consistency_proof_us": 38.2,
    "verify_inclusion_us": 22.4,
}


def _fig(name: str, value: float) -> None:
    print(f"{name:28s} {value:10.2f}   (baseline {BASELINE.get(name, float('nan')):.2f})")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--leaves", type=int, default=1_000_000)
    ap.add_argument("--proofs", type=int, default=20_000)
    ap.add_argument("--batch", type=int, default=1000)
    args = ap.parse_args()
    rng = random.Random(1)

    tree = InMemoryTree()
    hashes = [leaf_hash(i.to_bytes(8, "big")) for i in range(args.leaves)]
    t0 = time.perf_counter()
    for lo in range(0, args.leaves, args.batch):
        tree.extend_leaf_hashes(hashes[lo : lo + args.batch])
    t_append = time.perf_counter() - t0
    n = tree.size
    print(f"tree: {n} leaves, {sum(len(r) for r in tree.store.levels)} stored nodes, batches of {args.batch}")
    _fig("append_many_per_leaf_us", t_append / n * 1e6)

    root_n = tree.root()
    indices = [rng.randrange(n) for _ in range(args.proofs)]
    tree.store.reads = tree.store.calls = 0
    t0 = time.perf_counter()
    proofs = [tree.inclusion_proof(i, n) for i in indices]
    t_incl = time.perf_counter() - t0
    print(f"inclusion: {tree.store.calls} get calls, {tree.store.reads / args.proofs:.1f} node reads/proof, "
          f"{sum(map(len, proofs)) / args.proofs:.1f} hashes in each proof")
    _fig("inclusion_proof_us", t_incl / args.proofs * 1e6)

    t0 = time.perf_counter()
    for i, p in zip(indices, proofs, strict=True):
        assert verify_inclusion(tree.leaf_hash(i), i, n, p, root_n)
    _fig("verify_inclusion_us", (time.perf_counter() - t0) / args.proofs * 1e6)

    ms = [rng.randrange(1, n) for _ in range(args.proofs)]
    tree.store.reads = tree.store.calls = 0
    t0 = time.perf_counter()
    cproofs = [tree.consistency_proof(m, n) for m in ms]
    t_cons = time.perf_counter() - t0
    print(f"consistency: {tree.store.reads / args.proofs:.1f} node reads/proof")
    _fig("consistency_proof_us", t_cons / args.proofs * 1e6)
    for m, p in list(zip(ms, cproofs, strict=True))[:200]:
        assert verify_consistency(m, n, p, tree.root(m), root_n)


if __name__ == "__main__":
    main()
