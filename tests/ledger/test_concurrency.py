"""Several processes appending at once yield one consistent, gap-free log (SQLite and PostgreSQL)."""

from __future__ import annotations

import multiprocessing as mp

import pytest

from rlhf_ledger.core.keys import Signer
from rlhf_ledger.store.ledger import Ledger, audit

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


@pytest.mark.slow
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
    total = WRITERS + WRITERS * BATCHES * PER_BATCH  # one key event per producer first (docs/keys.md)
    assert all_indices == list(range(WRITERS, total)), "indices must be unique and gap-free"
    for r in results:  # each writer's batches were applied atomically, in its own order
        assert r == sorted(r)
    assert ledger.size("default") == total
    ledger.checkpoint("default")
    assert audit(ledger, "default") == []
    sizes = [c.size for c in ledger.list_checkpoints("default")]
    assert sizes == sorted(sizes) and sizes[-1] == total
    ledger.close()


def test_concurrent_init_of_one_log_has_one_winner(backend):
    """Several processes starting at once (API workers) may all create the same log: exactly
    one succeeds, the others get ConflictError and then read the winner's log."""
    import threading

    from rlhf_ledger.core.errors import ConflictError
    from rlhf_ledger.store.ledger import Ledger

    data_dir, url = backend
    Ledger.open(data_dir, url).close()  # schema in place before the race
    ledgers = [Ledger.open(data_dir, url) for _ in range(4)]
    outcomes: list[object] = []
    start = threading.Barrier(len(ledgers))

    def create(lg):
        start.wait()
        try:
            outcomes.append(lg.init_log("shared").public_key)
        except ConflictError as e:
            outcomes.append(e)

    threads = [threading.Thread(target=create, args=(lg,)) for lg in ledgers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = [o for o in outcomes if isinstance(o, bytes)]
    assert len(winners) == 1 and len(outcomes) == len(ledgers), outcomes
    for lg in ledgers:
        assert lg.log_info("shared").public_key == winners[0]
        lg.close()
