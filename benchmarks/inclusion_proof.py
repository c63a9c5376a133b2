"""Inclusion-proof generation from the SQLite store on a log of 1,000,000 signed events.

Builds the log once through the real append path (signed, verified events in batches of
1,000; kept in --data for reuse), then times Ledger.inclusion_proof for random indices
against the full tree, and prints the median and 99th percentile beside the same proofs
generated from an in-memory tree (ledger.merkle.InMemoryTree) as the floor.
Target (issue 2): median <= 1 ms.

Usage: .venv/bin/python benchmarks/inclusion_proof.py [--events 1000000] [--proofs 2000] [--data DIR]
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

os.environ.setdefault("RLHF_LEDGER_PASSPHRASE", "benchmark-only-passphrase")

from rlhf_ledger.core import merkle
from rlhf_ledger.core.events import make_event, sha256_hex, sign_event
from rlhf_ledger.core.jcs import canonicalize
from rlhf_ledger.core.keys import Signer
from rlhf_ledger.store.ledger import Ledger

LOG = "bench"


def _signed_chain(args: tuple[bytes, str, int, int]) -> list[dict]:
    """One producer's events start..start+n-1 in its own run (own chain per worker)."""
    seed, run_id, n, _ = args
    s = Signer.from_seed(seed)
    prev, out = None, []
    for seq in range(n):
        ev = make_event(log_id=LOG, run_id=run_id, type="policy.update", producer=s.key_id, seq=seq, prev=prev,
                        body={"step": seq, "loss": 0.5, "kl": 0.01})
        prev = sha256_hex(canonicalize(ev))
        out.append(sign_event(ev, s))
    return out


def build(data: Path, events: int) -> Ledger:
    ledger = Ledger.open(data)
    if LOG in {i.log_id for i in ledger.list_logs()} and ledger.size(LOG) >= events:
        return ledger
    if LOG not in {i.log_id for i in ledger.list_logs()}:
        ledger.init_log(LOG, checkpoint_every_events=100_000)
    chunk = 50_000
    seeds = [os.urandom(32) for _ in range((events + chunk - 1) // chunk)]
    for sd in seeds:
        ledger.register_producer(LOG, Signer.from_seed(sd).public_key)
    t0 = time.perf_counter()
    with ProcessPoolExecutor(2) as ex:
        jobs = [(sd, f"run-{k}", min(chunk, events - k * chunk), k) for k, sd in enumerate(seeds)]
        for evs in ex.map(_signed_chain, jobs):
            batches = [evs[i : i + 1000] for i in range(0, len(evs), 1000)]
            for _ in ledger.append_stream(batches, log_id=LOG, executor=ex):
                pass
            print(f"  built {ledger.size(LOG):,} events ({time.perf_counter() - t0:.0f} s)", flush=True)
    ledger.checkpoint(LOG)
    return ledger


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--proofs", type=int, default=2000)
    ap.add_argument("--data", type=Path, default=Path("/tmp/rlhf-bench-1m"))
    args = ap.parse_args()
    ledger = build(args.data, args.events)
    size = ledger.size(LOG)
    rng = random.Random(7)
    idx = [rng.randrange(size) for _ in range(args.proofs)]
    root = ledger.root(LOG, size)

    times = []
    for i in idx:
        t0 = time.perf_counter()
        _, proof = ledger.inclusion_proof(LOG, i, size)
        times.append(time.perf_counter() - t0)
    # correctness of what was timed, checked outside the timing
    for i in idx[:50]:
        _, proof = ledger.inclusion_proof(LOG, i, size)
        assert merkle.verify_inclusion(ledger.get_entry(LOG, i).leaf_hash, i, size, proof, root)

    tree = merkle.InMemoryTree()
    tree.extend_leaf_hashes([h for _, h in ledger.iter_leaf_hashes(LOG, 0, size)])
    mem = []
    for i in idx:
        t0 = time.perf_counter()
        tree.inclusion_proof(i, size)
        mem.append(time.perf_counter() - t0)

    def q(xs, p):
        return sorted(xs)[min(len(xs) - 1, int(p * len(xs)))] * 1e3

    print()
    print(f"log size {size:,}; {len(idx)} random inclusion proofs")
    print(f"{'proof generation (ms)':40s} {'median':>8s} {'p99':>8s}   target")
    print(f"{'SQLite store (Ledger.inclusion_proof)':40s} {statistics.median(times) * 1e3:8.3f} {q(times, .99):8.3f}   median <= 1 ms")
    print(f"{'in-memory tree (floor)':40s} {statistics.median(mem) * 1e3:8.3f} {q(mem, .99):8.3f}")


if __name__ == "__main__":
    main()
