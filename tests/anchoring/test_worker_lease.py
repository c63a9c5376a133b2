"""Only one worker anchors a log at a time: leases on SQLite and on the real PostgreSQL server,
and two workers racing against one PostgreSQL ledger and one anvil chain."""

from __future__ import annotations

import threading
import time
from collections import Counter

import pytest

from rlhf_ledger.anchoring.chain import ChainClient
from rlhf_ledger.anchoring.content_store import LocalContentStore
from rlhf_ledger.anchoring.worker import AnchorWorker
from rlhf_ledger.store import db
from rlhf_ledger.store.ledger import Ledger
from tests.anchoring.conftest import FAST_RETRY
from tests.anchoring.test_worker import LOG, chain_anchors
from tests.ledger.helpers import Producer


def _contend(ledger: Ledger, n: int) -> list[bool]:
    leases = [ledger.lease("anchor:race", holder=f"w{i}", ttl=30) for i in range(n)]
    barrier = threading.Barrier(n)
    won: list[bool] = [False] * n

    def take(i: int) -> None:
        barrier.wait()
        won[i] = leases[i].acquire()

    threads = [threading.Thread(target=take, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return won


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def test_lease_has_one_holder_and_expires(backend, tmp_path, request):
    url = request.getfixturevalue("pg_url") if backend == "postgresql" else f"sqlite:///{tmp_path / 'l.sqlite3'}"
    ledger = Ledger.open(tmp_path / "data", url)
    try:
        for _ in range(3):  # a fresh name each round: racing inserts, then racing updates
            with ledger.engine.begin() as conn:
                conn.execute(db.locks.delete())
            assert sum(_contend(ledger, 6)) == 1
        holder = ledger.lease("anchor:x", holder="a", ttl=0.3)
        other = ledger.lease("anchor:x", holder="b", ttl=30)
        assert holder.acquire() and not other.acquire()
        assert holder.renew() and other.current_holder()[0] == "a"
        time.sleep(0.4)  # a's lease expires without renewal: b takes over, a's renewal fails
        assert other.acquire() and not holder.renew()
        other.release()
        assert holder.acquire()
    finally:
        ledger.close()


@pytest.mark.postgres
@pytest.mark.anvil
def test_two_workers_on_postgresql_anchor_each_checkpoint_once(anvil, owner, pg_url, tmp_path):
    main = Ledger.open(tmp_path / "data", pg_url)
    main.init_log(LOG, checkpoint_every_events=10_000)
    producer = Producer(LOG)
    main.register_producer(LOG, producer.signer.public_key)
    final = main.size(LOG) + 12 * 3  # the producer's key event, then 12 batches of 3 events
    store = LocalContentStore(tmp_path / "content")
    workers = []
    for name in ("w1", "w2"):
        led = Ledger.open(tmp_path / "data", pg_url)  # each worker: its own engine and connections
        c = ChainClient(anvil.rpc_url, anvil.private_keys[0], contract_address=owner.contract_address, retry=FAST_RETRY)
        workers.append(AnchorWorker(led, c, store, LOG, confirmations=1, holder=name, lease_ttl=5))
    stop = threading.Event()
    leaders: Counter[str] = Counter()
    errors: list[BaseException] = []

    def loop(w: AnchorWorker) -> None:
        try:
            while not stop.is_set():
                if w.run_once().leader:
                    leaders[w.lease.holder] += 1
                    if leaders[w.lease.holder] % 3 == 0:
                        w.lease.release()  # hand over now and then, so both workers really anchor
                time.sleep(0.01)
        except BaseException as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=loop, args=(w,)) for w in workers]
    for t in threads:
        t.start()
    try:
        for _ in range(12):
            main.append(producer.events(3), log_id=LOG)
            main.checkpoint(LOG)
            time.sleep(0.15)
        deadline = time.time() + 20
        while time.time() < deadline:
            rows = main.anchors.for_log(LOG)
            if rows and rows[-1].checkpoint_size == final and rows[-1].status == "confirmed":
                break
            time.sleep(0.1)
    finally:
        stop.set()
        for t in threads:
            t.join()
        for w in workers:
            w.ledger.close()
    assert not errors, errors
    rows = main.anchors.for_log(LOG)
    assert rows[-1].checkpoint_size == final and all(r.status == "confirmed" for r in rows), rows
    sizes = [r.checkpoint_size for r in rows]
    assert len(sizes) == len(set(sizes))  # one anchor per checkpoint
    on_chain = chain_anchors(owner, main)
    assert sorted(lg["transactionHash"].lower() for lg in on_chain) == sorted(r.tx_hash for r in rows)
    assert leaders["w1"] > 0 and leaders["w2"] > 0
    main.close()
