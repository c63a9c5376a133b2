"""Read replica: proof latency served by a PostgreSQL streaming replica beside the primary's, in
the same run and under the same sustained submission, and the replica's replay lag.

Creates a throw-away primary and streaming replica (Debian pg_createcluster + pg_basebackup,
root needed; tests/deploy/pgcluster.py; the main cluster at :5432 is not touched), builds a
log, then for `--seconds` keeps appending batches at `--rate` events/s while two timers run:

- proof latency: entry + inclusion proof (Ledger.get_entry + Ledger.inclusion_proof at the
  latest checkpoint each side sees), alternating replica and primary request by request;
- replay lag: every 10 ms the log size on both; lag = time until the replica shows a size the
  primary showed (resolution: the sampling period), and the size difference in events.

Run (as root): .venv/bin/python benchmarks/replica.py [--events 20000 --rate 2000 --seconds 20 --sync]
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import sqlalchemy as sa  # noqa: E402

from rlhf_ledger.store import db  # noqa: E402
from rlhf_ledger.store.ledger import Ledger  # noqa: E402
from tests.deploy import pgcluster  # noqa: E402
from tests.ledger.helpers import Producer  # noqa: E402

LOG = "replicabench"


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=20_000, help="log size before the measurement")
    ap.add_argument("--rate", type=float, default=2000.0, help="sustained submission, events/s")
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--sync", action="store_true", help="synchronous replication (default asynchronous)")
    args = ap.parse_args()
    if (why := pgcluster.available()) is not None:
        sys.exit(f"replica benchmark: {why}")
    os.environ.setdefault("RLHF_LEDGER_PASSPHRASE", "bench-passphrase-not-a-secret")
    primary = pgcluster.Cluster.create("rlhf_bench_p")
    replica = None
    try:
        primary.start()
        primary.scalar("CREATE DATABASE ledger")
        replica = primary.replica("rlhf_bench_r", application_name="bench_replica")
        if args.sync:
            primary.scalar("ALTER SYSTEM SET synchronous_standby_names = 'bench_replica'")
            primary.scalar("SELECT pg_reload_conf()")
        tmp = Path(tempfile.mkdtemp(prefix="replica-bench-"))
        writer = Ledger.open(tmp / "data", primary.url("ledger"))
        writer.init_log(LOG, checkpoint_every_events=1000)
        prod = Producer(LOG)
        writer.register_producer(LOG, prod.signer.public_key)
        t0 = time.perf_counter()
        for _ in range(args.events // 1000):
            writer.append(prod.events(1000), log_id=LOG)
        print(f"built {writer.size(LOG)} events in {time.perf_counter() - t0:.1f}s "
              f"({'synchronous' if args.sync else 'asynchronous'} replication)")
        on_primary = Ledger.open(tmp / "data", primary.url("ledger"), migrate=False)
        on_replica = Ledger(on_primary.engine, tmp / "data" / "keys",
                            replica_engine=db.make_engine(db.database_url(None, replica.url("ledger")), writer=False))
        while on_replica.latest_checkpoint(LOG).size < writer.size(LOG) - 1000:
            time.sleep(0.05)

        stop = threading.Event()
        appended = [0]

        def submit() -> None:
            batch = 100
            next_t = time.perf_counter()
            while not stop.is_set():
                writer.append(prod.events(batch), log_id=LOG)
                appended[0] += batch
                next_t += batch / args.rate
                time.sleep(max(0.0, next_t - time.perf_counter()))

        samples: list[tuple[float, int, int]] = []
        pe = sa.create_engine(primary.url("ledger"), pool_size=1)
        re_ = sa.create_engine(replica.url("ledger"), pool_size=1)
        q = sa.select(db.logs.c.size).where(db.logs.c.log_id == LOG)

        def sample() -> None:
            with pe.connect() as pc, re_.connect() as rc:
                while not stop.is_set():
                    t = time.perf_counter()
                    ps = pc.execute(q).scalar_one()
                    pc.rollback()
                    rs = rc.execute(q).scalar_one()
                    rc.rollback()
                    samples.append((t, ps, rs))
                    time.sleep(0.01)

        lat = {"replica": [], "primary": []}
        rnd = random.Random(7)

        def read() -> None:
            while not stop.is_set():
                for name, lg in (("replica", on_replica), ("primary", on_primary)):
                    t = time.perf_counter()
                    cp = lg.latest_checkpoint(LOG)
                    i = rnd.randrange(cp.size)
                    lg.get_entry(LOG, i)
                    lg.inclusion_proof(LOG, i, cp.size)
                    lat[name].append(time.perf_counter() - t)

        threads = [threading.Thread(target=f) for f in (submit, sample, read)]
        fallbacks0 = on_replica.replica_fallbacks
        t0 = time.perf_counter()
        for th in threads:
            th.start()
        time.sleep(args.seconds)
        stop.set()
        for th in threads:
            th.join()
        elapsed = time.perf_counter() - t0
        print(f"sustained submission: {appended[0] / elapsed:,.0f} events/s for {elapsed:.1f}s (target {args.rate:,.0f})")
        for name in ("primary", "replica"):
            xs = lat[name]
            print(f"proof latency from {name:8s}: median {statistics.median(xs) * 1e3:.2f} ms, "
                  f"p99 {pct(xs, 0.99) * 1e3:.2f} ms over {len(xs)} requests (entry + inclusion proof at the newest checkpoint)")
        print(f"replica reads answered by the primary (not replayed yet): {on_replica.replica_fallbacks - fallbacks0}")
        # Replay lag: for each primary sample, when did the replica first show that size?
        lags, behind = [], [ps - rs for _, ps, rs in samples]
        j = 0
        for t, ps, _ in samples:
            while j < len(samples) and (samples[j][0] < t or samples[j][2] < ps):
                j += 1
            if j == len(samples):
                break
            lags.append(samples[j][0] - t)
        print(f"replica replay lag: median {statistics.median(lags) * 1e3:.1f} ms, p99 {pct(lags, 0.99) * 1e3:.1f} ms, "
              f"max {max(lags) * 1e3:.1f} ms (10 ms sampling); events behind: median {statistics.median(behind):.0f}, "
              f"p99 {pct(behind, 0.99):.0f}, max {max(behind)} over {len(samples)} samples")
        pe.dispose()
        re_.dispose()
        on_replica.replica_engine.dispose()
        on_primary.close()
        writer.close()
    finally:
        if replica is not None:
            replica.drop()
        primary.drop()


if __name__ == "__main__":
    main()
