"""Cost of the run index (docs/run-index.md) on a SQLite log: what each anchor's manifest adds.

Builds a log of --events signed events spread over --runs runs through the real append path,
then computes the run index at --anchors evenly spaced sizes, as the anchoring worker does
once per anchor (each computation extends the previous one with the entries in between and
signs a note). Printed beside it, from the same run: the floor of reading the same entries
once (SELECT of the columns the index needs), and one from-scratch computation at the final
size (what a fresh database pays once).

Usage: .venv/bin/python benchmarks/run_index.py [--events 100000] [--runs 1000] [--anchors 20]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("RLHF_LEDGER_PASSPHRASE", "benchmark-only-passphrase")

import sqlalchemy as sa

from rlhf_ledger.core.events import make_event, sha256_hex, sign_event
from rlhf_ledger.core.jcs import canonicalize
from rlhf_ledger.core.keys import Signer
from rlhf_ledger.store import db
from rlhf_ledger.store.ledger import Ledger
from rlhf_ledger.store.run_index import run_index

LOG = "bench"


def build(ledger: Ledger, events: int, runs: int) -> None:
    ledger.init_log(LOG, checkpoint_every_events=10**9)
    s = Signer.generate()
    ledger.register_producer(LOG, s.public_key)
    heads: dict[str, tuple[int, str | None]] = {}
    batch = []
    for i in range(events):
        run = f"run-{i % runs}"
        seq, prev = heads.get(run, (-1, None))
        ev = make_event(log_id=LOG, run_id=run, type="policy.update", producer=s.key_id, seq=seq + 1, prev=prev,
                        body={"step": seq + 1, "loss": 0.5})
        heads[run] = (seq + 1, sha256_hex(canonicalize(ev)))
        batch.append(sign_event(ev, s))
        if len(batch) == 1000:
            ledger.append(batch, log_id=LOG)
            batch = []
    if batch:
        ledger.append(batch, log_id=LOG)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=100_000)
    ap.add_argument("--runs", type=int, default=1000)
    ap.add_argument("--anchors", type=int, default=20)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        ledger = Ledger.open(Path(tmp))
        t0 = time.perf_counter()
        build(ledger, a.events, a.runs)
        print(f"built {a.events} events in {a.runs} runs in {time.perf_counter() - t0:.1f} s")

        e = db.entries.c
        t0 = time.perf_counter()
        with ledger.engine.connect() as conn:
            n = len(conn.execute(sa.select(e.idx, e.run_id, e.producer, e.seq, e.event_id, e.type, e.leaf_hash)
                                 .where(e.log_id == LOG).order_by(e.idx)).all())
            conn.rollback()
        floor = time.perf_counter() - t0

        sizes = [a.events * (k + 1) // a.anchors for k in range(a.anchors)]
        times = []
        for size in sizes:
            t0 = time.perf_counter()
            run_index(ledger, LOG, size)
            times.append(time.perf_counter() - t0)
        with ledger.engine.begin() as conn:
            conn.execute(sa.delete(db.run_indexes))
            conn.execute(sa.delete(db.run_records))
        t0 = time.perf_counter()
        idx = run_index(ledger, LOG, a.events)
        scratch = time.perf_counter() - t0
        ledger.close()
    per_anchor = sorted(times)[len(times) // 2]
    print(f"run index, {a.anchors} anchors of {a.events // a.anchors} new events each over {idx.count} runs:")
    print(f"  incremental, per anchor: median {per_anchor * 1000:.0f} ms, max {max(times) * 1000:.0f} ms, "
          f"total {sum(times):.2f} s")
    print(f"  from scratch at size {a.events}: {scratch:.2f} s")
    print(f"  floor (reading the {n} entries' index columns once): {floor:.2f} s")
    print(f"  incremental total / floor: {sum(times) / floor:.1f}x")


if __name__ == "__main__":
    main()
