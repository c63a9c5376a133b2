"""Several processes appending at once yield one consistent, gap-free log (SQLite and PostgreSQL)."""

from __future__ import annotations

import multiprocessing as mp

from ledger.store import Ledger, audit
from ledger.keys import Signer

WRITERS = 4
BATCHES = 8
PER_BATCH = 25


def _writer(data_dir: str, url: str | None, seed: bytes, out: mp.Queue) -> None:
    from tests.ledger.helpers import Producer

    ledger = Ledger.open(data_dir, url, migrate=False)
    p = Producer(signer=Signer.from_seed(seed))
    indices = []
    for _ in range(BATCHES):
        indices += [r.index for r in ledger.append(p.events(PER_BATCH, run_id=f"run-{seed.hex()[:6]}"))]
    ledger.close()
    out.put(indices)


def test_concurrent_writers_one_consistent_log(backend):
    data_dir, url = backend
    ledger = Ledger.open(data_dir, url)
    ledger.init_log("default", checkpoint_every_events=40)
    seeds = [bytes([i + 1]) * 32 for i in range(WRITERS)]
    for s in seeds:
        ledger.register_producer("default", Signer.from_seed(s).public_key)
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    procs = [ctx.Process(target=_writer, args=(str(data_dir), url, s, q)) for s in seeds]
    for p in procs:
        p.start()
    results = [q.get(timeout=240) for _ in procs]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    all_indices = sorted(i for r in results for i in r)
    total = WRITERS * BATCHES * PER_BATCH
    assert all_indices == list(range(total)), "indices must be unique and gap-free"
    for r in results:  # each writer's batches were applied atomically, in its own order
        assert r == sorted(r)
    assert ledger.size("default") == total
    ledger.checkpoint("default")
    assert audit(ledger, "default") == []
    sizes = [c.size for c in ledger.list_checkpoints("default")]
    assert sizes == sorted(sizes) and sizes[-1] == total
    ledger.close()
