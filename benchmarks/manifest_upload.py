"""Manifest upload throughput into LocalContentStore, beside plain SHA-256 over the same bytes.

Run: .venv/bin/python benchmarks/manifest_upload.py [--seconds 2]

For each manifest size (10 KB, 1 MB, 32 MB) it stores distinct random manifests for about
`--seconds` seconds (each put computes the UnixFS CID, writes a temp file, fsyncs, renames, fsyncs
the directory) and reports MB/s and manifests/s; then it times hashlib.sha256 over the same
manifests in the same run as the baseline. The ratio shows the cost of the CID layout + durable
write over bare hashing. Numbers depend on the disk's fsync latency.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rlhf_ledger.anchoring.cid import cid_for_bytes
from rlhf_ledger.anchoring.content_store import LocalContentStore

SIZES = [("10 KB", 10_000), ("1 MB", 1_000_000), ("32 MB", 32_000_000)]


def _manifests(size: int, count: int) -> list[bytes]:
    base = os.urandom(size)
    # distinct contents (a different 8-byte prefix each) so every put really writes a file
    return [i.to_bytes(8, "big") + base[8:] for i in range(count)]


def _rate(total_bytes: int, count: int, seconds: float) -> str:
    return f"{total_bytes / seconds / 1e6:9.1f} MB/s {count / seconds:10.1f} manifests/s"


def run(seconds: float) -> None:
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cpus, target {seconds:.1f} s per size")
    print(f"{'size':>6}  {'what':<28}{'throughput':>40}")
    for label, size in SIZES:
        # size the batch so one pass takes roughly `seconds` (estimated from one put)
        with tempfile.TemporaryDirectory(dir=os.getcwd()) as d:
            store = LocalContentStore(d)
            t0 = time.perf_counter()
            store.put(os.urandom(size))
            one = max(time.perf_counter() - t0, 1e-6)
            # bounded by count and by ~512 MB of manifests held in memory
            count = max(3, min(20000, int(seconds / one), 512_000_000 // size))
            batch = _manifests(size, count)

            t0 = time.perf_counter()
            for m in batch:
                store.put(m)
            put_s = time.perf_counter() - t0

            t0 = time.perf_counter()
            for m in batch:
                cid_for_bytes(m)
            cid_s = time.perf_counter() - t0

            t0 = time.perf_counter()
            for m in batch:
                hashlib.sha256(m).digest()
            sha_s = time.perf_counter() - t0

        total = size * count
        print(f"{label:>6}  {'LocalContentStore.put':<28}{_rate(total, count, put_s)}   ({count} manifests)")
        print(f"{'':>6}  {'cid_for_bytes only':<28}{_rate(total, count, cid_s)}")
        print(f"{'':>6}  {'baseline hashlib.sha256':<28}{_rate(total, count, sha_s)}")
        print(f"{'':>6}  put / sha256 time ratio: {put_s / sha_s:.1f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="approximate time per size")
    run(parser.parse_args().seconds)


if __name__ == "__main__":
    main()
