"""Append throughput of signed events (each signature verified) into the SQLite store.

Prints, measured in the same run and side by side:
  - the physical bound: libsodium Ed25519 verifications per second on one core (PyNaCl) and
    on two (two threads, no inter-process overhead);
  - the ledger's append rate in batches of 1,000 (Ledger.append_stream):
      * one core: everything on the calling thread, the process pinned to one CPU;
      * two cores with threads: parsing and commits on the calling thread, signature checks
        of the next batches in one (and, for comparison, two) threads (libsodium in a
        GIL-free loop, ledger/sigverify.py);
      * two worker processes: parsing and signature checks in the workers;
  - pymerkle's in-memory append rate (no signatures, no storage) as an outside reference.
Targets (issue 2): >= 10,000 events/s on one core, >= 18,000 events/s on two.

Usage: .venv/bin/python benchmarks/append_throughput.py [--events 50000] [--batch 1000]
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path

os.environ.setdefault("RLHF_LEDGER_PASSPHRASE", "benchmark-only-passphrase")

from rlhf_ledger.core import sigverify
from rlhf_ledger.core.events import make_event, sha256_hex, sign_event
from rlhf_ledger.core.jcs import canonicalize
from rlhf_ledger.core.keys import Signer, verify
from rlhf_ledger.store.ledger import Ledger


def make_events(n: int, producers: int = 4) -> tuple[list[Signer], list[dict]]:
    signers = [Signer.generate() for _ in range(producers)]
    heads: dict[int, str | None] = {i: None for i in range(producers)}
    out = []
    for k in range(n):
        i = k % producers
        s = signers[i]
        ev = make_event(
            log_id="bench", run_id="run-1", type="policy.update", producer=s.key_id, seq=k // producers, prev=heads[i],
            body={"step": k, "loss": 0.1234 + k * 1e-6, "kl": 0.0456, "reward_mean": 1.5, "grad_norm": 0.75},
        )
        heads[i] = sha256_hex(canonicalize(ev))
        out.append(sign_event(ev, s))
    return signers, out


def _verify_all(items) -> int:
    return sum(verify(pk, m, s) for pk, m, s in items)


def verify_rate(triples, cores: int) -> float:
    """Bare libsodium verifications per second: through PyNaCl's binding on one core, or with
    the same library in `cores` threads (ledger.sigverify's GIL-free loop: no pickling, no
    process start-up in the figure)."""
    if cores == 1:
        t0 = time.perf_counter()
        _verify_all(triples)
        return len(triples) / (time.perf_counter() - t0)
    n = len(triples) // cores + 1
    parts = [triples[i : i + n] for i in range(0, len(triples), n)]
    with ThreadPoolExecutor(cores) as ex:
        t0 = time.perf_counter()
        done = list(ex.map(lambda part: sum(sigverify.verify_many(*zip(*part, strict=True))), parts))
        rate = len(triples) / (time.perf_counter() - t0)
    assert sum(done) == len(triples)
    return rate


def append_rate(events: list[dict], signers: list[Signer], batch: int, executor) -> float:
    d = Path(tempfile.mkdtemp(prefix="rlhf-bench-"))
    try:
        ledger = Ledger.open(d)
        ledger.init_log("bench", checkpoint_every_events=10**9)
        for s in signers:
            ledger.register_producer("bench", s.public_key)
        base = ledger.size("bench")  # the producers' key events (docs/keys.md)
        batches = [events[i : i + batch] for i in range(0, len(events), batch)]
        t0 = time.perf_counter()
        for _ in ledger.append_stream(batches, log_id="bench", executor=executor):
            pass
        rate = len(events) / (time.perf_counter() - t0)
        assert ledger.size("bench") == base + len(events)
        ledger.close()
        return rate
    finally:
        shutil.rmtree(d, ignore_errors=True)


def pymerkle_rate(n: int) -> float:
    from pymerkle import InmemoryTree

    tree = InmemoryTree(algorithm="sha256")
    data = [i.to_bytes(8, "big") for i in range(n)]
    t0 = time.perf_counter()
    for x in data:
        tree.append_entry(x)
    return n / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=50_000)
    ap.add_argument("--batch", type=int, default=1000)
    args = ap.parse_args()
    print(f"preparing {args.events} signed events ...", flush=True)
    signers, events = make_events(args.events)
    keys = {s.key_id: s.public_key for s in signers}
    triples = [(keys[e["event"]["producer"]], canonicalize(e["event"]), __import__("base64").b64decode(e["sig"])) for e in events]

    bound1 = verify_rate(triples, 1)
    bound2 = verify_rate(triples, 2)
    cpus = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(cpus)})  # "one core" means one: no thread may run elsewhere
    try:
        one = append_rate(events, signers, args.batch, None)
    finally:
        os.sched_setaffinity(0, cpus)
    with ThreadPoolExecutor(1) as ex:
        one_thread = append_rate(events, signers, args.batch, ex)
    with ThreadPoolExecutor(2) as ex:
        two_threads = append_rate(events, signers, args.batch, ex)
    with ProcessPoolExecutor(2) as ex:
        list(ex.map(abs, range(4)))  # start the workers before timing
        two = append_rate(events, signers, args.batch, ex)
    pm = pymerkle_rate(min(args.events, 50_000))

    print()
    print(f"{'measure (events/s)':54s} {'rate':>10s}   target")
    print(f"{'Ed25519 verify bound, 1 core (PyNaCl)':54s} {bound1:10,.0f}")
    print(f"{'Ed25519 verify bound, 2 cores (libsodium, 2 threads)':54s} {bound2:10,.0f}")
    print(f"{f'ledger append, batches of {args.batch}, 1 core':54s} {one:10,.0f}   >= 10,000  ({one / bound1:.0%} of the 1-core bound)")
    print(f"{f'ledger append, batches of {args.batch}, 2 cores, 1 sig thread':54s} {one_thread:10,.0f}   >= 18,000  ({one_thread / bound2:.0%} of the 2-core bound)")
    print(f"{f'ledger append, batches of {args.batch}, 2 cores, 2 sig threads':54s} {two_threads:10,.0f}   >= 18,000  ({two_threads / bound2:.0%} of the 2-core bound)")
    print(f"{f'ledger append, batches of {args.batch}, 2 worker processes':54s} {two:10,.0f}   >= 18,000  ({two / bound2:.0%} of the 2-core bound)")
    print(f"(signature checks: {sigverify.engine()})")
    print(f"{'pymerkle InmemoryTree.append_entry (no sigs, no disk)':54s} {pm:10,.0f}")


if __name__ == "__main__":
    main()
