"""Read replicas and failover on real PostgreSQL: a throw-away primary and a streaming replica
(pg_createcluster + pg_basebackup, tests/deploy/pgcluster.py) on free loopback ports.

Proofs are served from the replica under load (every one verified; sizes the replica has not
replayed are answered from the primary, never for another size); then the primary is stopped
hard (`pg_ctlcluster stop -m immediate`), the replica promoted and the ledger pointed at it:
- synchronous replication: every acknowledged event is there and the log signs on;
- asynchronous replication with a lost tail: the fork guard refuses to sign and append, says
  why, and `recover` with the producers' events restores the published tree.
"""

from __future__ import annotations

import random
import threading
import time

import pytest
import sqlalchemy as sa
from prometheus_client import CollectorRegistry, generate_latest

from ledger import db, merkle
from ledger.fork_guard import SigningRefused
from ledger.recover import recover
from ledger.events import parse_envelope
from ledger.store import Ledger, audit
from tests.deploy import pgcluster
from tests.ledger.helpers import Producer

LOG = "train"
pytestmark = pytest.mark.skipif(pgcluster.available() is not None, reason=str(pgcluster.available()))


@pytest.fixture
def clusters(request):
    made: list[pgcluster.Cluster] = []

    def make(sync: bool):
        p = pgcluster.Cluster.create("rlhf_p")
        made.append(p)
        p.start()
        p.scalar("CREATE DATABASE ledger")
        r = p.replica("rlhf_r", application_name="rlhf_replica")
        made.append(r)
        if sync:  # only once the standby exists: before, every commit would wait for it
            p.scalar("ALTER SYSTEM SET synchronous_standby_names = 'rlhf_replica'")
            p.scalar("ALTER SYSTEM SET synchronous_commit = 'on'")
            p.scalar("SELECT pg_reload_conf()")
        deadline = time.monotonic() + 20
        want = "sync" if sync else "async"
        while p.scalar("SELECT sync_state FROM pg_stat_replication") != want:
            assert time.monotonic() < deadline, "replica did not attach"
            time.sleep(0.1)
        return p, r

    yield make
    for c in made:
        c.drop()


class Load:
    """One appender (acknowledged events recorded) and two proof readers on the replica."""

    def __init__(self, ledger: Ledger, producer: Producer, primary_url: str):
        self.ledger, self.producer = ledger, producer
        self.primary = sa.create_engine(primary_url, poolclass=sa.pool.NullPool)
        self.acked: list[dict] = []
        self.stop_reads = threading.Event()
        self.stop_writes = threading.Event()
        self.reads = 0
        self.beyond_replica = 0
        self.errors: list[str] = []

    def append(self) -> None:
        while not self.stop_writes.is_set():
            batch = self.producer.events(10)
            try:
                self.ledger.append(batch, log_id=LOG)
            except Exception:  # noqa: BLE001 - the primary died mid-commit: not acknowledged
                return
            self.acked.extend(batch)

    def read(self) -> None:
        rnd = random.Random()
        while not self.stop_reads.is_set():
            try:
                with self.primary.connect() as c:  # the primary's newest checkpoint: maybe not replayed
                    row = c.execute(sa.select(db.checkpoints.c.size, db.checkpoints.c.root)
                                    .where(db.checkpoints.c.log_id == LOG)
                                    .order_by(db.checkpoints.c.size.desc()).limit(1)).one()
                for size, root in ((row.size, bytes(row.root)), self._replica_latest()):
                    if size == 0:
                        continue
                    idx = rnd.randrange(size)
                    n, path = self.ledger.inclusion_proof(LOG, idx, size)
                    entry = self.ledger.get_entry(LOG, idx)
                    assert n == size, (n, size)  # never a proof for another size
                    assert merkle.verify_inclusion(merkle.leaf_hash(bytes(entry.entry)), idx, n, path, root)
                    self.reads += 1
            except AssertionError as e:
                self.errors.append(f"wrong proof: {e}")
                return

    def _replica_latest(self) -> tuple[int, bytes]:
        cp = self.ledger.latest_checkpoint(LOG)
        return cp.size, cp.root

    def run(self, seconds: float) -> None:
        threads = [threading.Thread(target=self.append)] + [threading.Thread(target=self.read) for _ in range(2)]
        for t in threads:
            t.start()
        self.threads = threads
        time.sleep(seconds)
        self.stop_reads.set()
        for t in threads[1:]:
            t.join(30)


def _open(tmp_path, url: str, read_url: str | None = None) -> Ledger:
    return Ledger.open(tmp_path / "data", url, database_read_url=read_url)


def _start(tmp_path, p, r):
    lg = _open(tmp_path, p.url("ledger"), r.url("ledger"))
    lg.init_log(LOG, checkpoint_every_events=40)
    prod = Producer(LOG)
    lg.register_producer(LOG, prod.signer.public_key)
    return lg, prod


def test_sync_replica_serves_proofs_and_loses_nothing_on_failover(clusters, tmp_path):
    p, r = clusters(sync=True)
    lg, prod = _start(tmp_path, p, r)
    load = Load(lg, prod, p.url("ledger"))
    load.run(3.0)
    assert not load.errors, load.errors
    assert load.reads > 20 and lg.replica_fallbacks < load.reads  # most reads came from the replica
    p.stop("immediate")  # hard stop while the appender is committing
    load.threads[0].join(30)
    load.primary.dispose()
    lg.close()
    r.promote()
    lg2 = _open(tmp_path, r.url("ledger"))
    ids = {row.event_id for row in lg2.iter_entries(LOG)}
    acked = {parse_envelope(e).event_id for e in load.acked}
    assert len(acked) >= 50 and acked <= ids  # synchronous: no acknowledged event lost
    assert lg2.fork_check(LOG) is None
    assert audit(lg2, LOG) == []
    cp = lg2.checkpoint(LOG)
    assert cp.size == lg2.size(LOG)
    lg2.close()


def test_async_failover_with_lost_tail_refuses_to_sign_until_recovered(clusters, tmp_path):
    p, r = clusters(sync=False)
    lg, prod = _start(tmp_path, p, r)
    load = Load(lg, prod, p.url("ledger"))
    load.run(1.5)
    load.stop_writes.set()
    load.threads[0].join(30)
    assert not load.errors, load.errors
    # The replica falls behind (here: disconnected), the primary acknowledges more and publishes it.
    r.stop("fast")
    tail = prod.events(25)
    lg.append(tail, log_id=LOG)
    published = lg.checkpoint(LOG)
    load.acked.extend(tail)
    p.stop("immediate")
    load.primary.dispose()
    lg.close()
    r.start()
    r.promote()
    lg2 = _open(tmp_path, r.url("ledger"))
    why = lg2.fork_check(LOG)
    assert why is not None and f"size {published.size}" in why and "recover" in why
    before = [c.size for c in lg2.list_checkpoints(LOG)]
    try:  # refused, or (if the replica stopped exactly at a checkpoint) that existing one returned
        assert lg2.checkpoint(LOG).size in before
    except SigningRefused:
        pass
    assert lg2.maybe_checkpoint(LOG, now=1e12) is None
    assert [c.size for c in lg2.list_checkpoints(LOG)] == before  # nothing new signed
    other = Producer(LOG)
    lg2.register_producer(LOG, other.signer.public_key)
    with pytest.raises(SigningRefused):  # it would take an index the published tree gives another event
        lg2.append(other.events(1), log_id=LOG)
    from api.ops_metrics import OpsCollector

    reg = CollectorRegistry()
    reg.register(OpsCollector(lg2))
    assert f'ledger_log_signing_refused{{log_id="{LOG}"}} 1.0' in generate_latest(reg).decode()
    # Recovery: the producer's events (signatures and ids unchanged) re-appended in order.
    res = recover(lg2, LOG, [parse_envelope(e) for e in load.acked])
    assert res.size_after == published.size and res.appended >= 25
    assert lg2.fork_check(LOG) is None
    assert lg2.root(LOG, published.size) == published.root
    assert lg2.checkpoint(LOG).root == published.root
    assert audit(lg2, LOG) == []
    lg2.close()
