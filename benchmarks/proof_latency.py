"""Proof latency over HTTP on a 1,000,000-event log: median and p99 (target: median < 5 ms).

Builds the log once by appending pre-signed events in batches (minutes; reused with
--data-dir on later runs), then starts the service and times GET entry+inclusion proof,
GET tlog-proof and GET consistency from random positions, beside the in-process
Ledger.inclusion_proof baseline. Run: .venv/bin/python benchmarks/proof_latency.py
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import httpx  # noqa: E402
from http_submit import PASSPHRASE, start_server  # noqa: E402

from rlhf_ledger.core.keys import Signer  # noqa: E402

LOG_ID = "proofbench"


def build(ledger, n: int, batch: int) -> None:
    try:
        info = ledger.log_info(LOG_ID)
    except Exception:
        ledger.init_log(LOG_ID, checkpoint_every_events=100_000)
        info = ledger.log_info(LOG_ID)
    if info.size >= n:
        print(f"reusing log {LOG_ID!r} of size {info.size}")
        return
    if info.size:
        raise SystemExit(f"log {LOG_ID!r} has {info.size} < {n} events from an interrupted build: use a new --data-dir")
    signer = Signer.generate()
    ledger.register_producer(LOG_ID, signer.public_key)
    executor = ThreadPoolExecutor(2)
    t0 = time.perf_counter()
    done = 0
    # Sign and append in chunks of 10 batches (memory stays small; signing is part of the build).
    chunk = 10
    from rlhf_ledger.core.events import make_event, sha256_hex, sign_event
    from rlhf_ledger.core.jcs import canonicalize

    seq, prev = 0, None
    while done < n:
        for _ in range(chunk):
            if done >= n:
                break
            b = []
            for _ in range(min(batch, n - done)):
                ev = make_event(log_id=LOG_ID, run_id="bench", type="compute.usage", producer=signer.key_id, seq=seq, prev=prev,
                                body={"device": "cpu", "seconds": seq})
                b.append(sign_event(ev, signer))
                prev, seq = sha256_hex(canonicalize(ev)), seq + 1
            ledger.append(b, log_id=LOG_ID, executor=executor)
            done += len(b)
        el = time.perf_counter() - t0
        print(f"  built {done:>9} events in {el:6.0f} s ({done / el:.0f}/s)", flush=True)
    ledger.checkpoint(LOG_ID)
    executor.shutdown()


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def report(name: str, xs: list[float]) -> None:
    print(f"{name:34s} median {statistics.median(xs) * 1000:7.2f} ms   p99 {pct(xs, 0.99) * 1000:7.2f} ms   (n={len(xs)})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--batch", type=int, default=10_000)
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--data-dir", default=None)
    args = ap.parse_args()
    os.environ["RLHF_LEDGER_PASSPHRASE"] = PASSPHRASE
    from rlhf_ledger.store.ledger import Ledger

    data_dir = Path(args.data_dir or tempfile.mkdtemp(prefix="bench-proofs-"))
    database_url = os.environ.get("DATABASE_URL")
    print(f"data dir {data_dir} ({'postgresql' if database_url else 'sqlite'})")
    ledger = Ledger.open(data_dir, database_url)
    build(ledger, args.events, args.batch)
    size = ledger.latest_checkpoint(LOG_ID).size
    rnd = random.Random(7)
    base = []
    for _ in range(args.requests):
        i = rnd.randrange(size)
        t = time.perf_counter()
        ledger.inclusion_proof(LOG_ID, i)
        base.append(time.perf_counter() - t)
    ledger.close()

    proc, url = start_server(data_dir, database_url)
    try:
        with httpx.Client(base_url=url, timeout=30) as h:
            for _ in range(50):  # warm-up
                h.get(f"/v1/logs/{LOG_ID}/entries/{rnd.randrange(size)}").raise_for_status()
            res: dict[str, list[float]] = {"entry": [], "tlog": [], "consistency": []}
            for _ in range(args.requests):
                i = rnd.randrange(size)
                t = time.perf_counter()
                r = h.get(f"/v1/logs/{LOG_ID}/entries/{i}")
                res["entry"].append(time.perf_counter() - t)
                assert r.status_code == 200 and r.json()["proof"]["tree_size"] == size, r.text[:300]
            for _ in range(args.requests // 4):
                i = rnd.randrange(size)
                t = time.perf_counter()
                h.get(f"/v1/logs/{LOG_ID}/entries/{i}/tlog-proof").raise_for_status()
                res["tlog"].append(time.perf_counter() - t)
                m = rnd.randrange(1, size)
                t = time.perf_counter()
                h.get(f"/v1/logs/{LOG_ID}/consistency", params={"first": m, "second": size}).raise_for_status()
                res["consistency"].append(time.perf_counter() - t)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    print(f"log size {size}, {os.cpu_count()} CPUs")
    report("in-process inclusion_proof", base)
    report("HTTP GET entry + inclusion proof", res["entry"])
    report("HTTP GET tlog-proof", res["tlog"])
    report("HTTP GET consistency", res["consistency"])
    print(f"target: HTTP entry + proof median < 5 ms -> {'met' if statistics.median(res['entry']) < 0.005 else 'NOT met'}")


if __name__ == "__main__":
    main()
