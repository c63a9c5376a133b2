"""Read replicas and failover on real PostgreSQL, through the real service over HTTP.

One throw-away primary with two streaming standbys (pg_createcluster + pg_basebackup,
tests/deploy/pgcluster.py, free loopback ports): a synchronous one (`synchronous_standby_names`)
and an asynchronous read replica. `rlhf-ledger serve` runs with DATABASE_URL = the primary and
DATABASE_READ_URL = the read replica.

Under load, an HTTP submitter records what the service acknowledged and two HTTP readers
verify every proof (inclusion under a checkpoint whose signature is checked, for the leaf the
submitter was acknowledged), often for the newest entries, which the replica may not have
replayed yet. With the replica's replay paused, a checkpoint size and entries it lacks are
answered from the primary. Then the read replica falls behind (disconnected) while the primary
acknowledges and checkpoints a tail, and the primary is stopped hard (`pg_ctl stop -m
immediate`) while the submitter is committing; the service is killed with it. From that one
history, both standbys are promoted, each with the service restarted on it:

- the synchronous standby: every acknowledged event is there (re-submitting each one is a
  duplicate at the index it was acknowledged at), the service is ready and signs on;
- the asynchronous one, which lacks the tail a published checkpoint covers: the service starts
  not ready, /readyz and /metrics say why, submissions get 503 and nothing is signed;
  `rlhf-ledger recover` with the producer's events restores the published tree.

In both, every checkpoint any client saw, before and after the failover, is consistent with
the final one: no conflicting checkpoint was ever signed.
"""

from __future__ import annotations

import base64
import json
import os
import random
import re
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from rlhf_ledger.api.tokens import create_token
from rlhf_ledger.core import merkle
from rlhf_ledger.core.checkpoints import parse_and_verify
from rlhf_ledger.store.ledger import Ledger, audit
from tests.api.helpers import wait_for
from tests.deploy import pgcluster, service
from tests.ledger.helpers import Producer

LOG = "train"
ROOT = Path(__file__).resolve().parents[2]
SYNC, READ = "rlhf_sync_standby", "rlhf_read_replica"  # application names on the primary
pytestmark = pytest.mark.skipif(pgcluster.available() is not None, reason=str(pgcluster.available()))


def b64d(s: str) -> bytes:
    return base64.b64decode(s, validate=True)


@pytest.fixture(scope="module")
def clusters():
    """(primary, synchronous standby, asynchronous read replica), dropped after the module."""
    made: list[pgcluster.Cluster] = []
    try:
        p = pgcluster.Cluster.create("rlhf_p")
        made.append(p)
        p.start()
        p.scalar("CREATE DATABASE ledger")
        for name in (SYNC, READ):
            made.append(p.replica("rlhf_s", application_name=name))
        # Only once the standbys exist: before, every commit would wait for one.
        p.scalar(f"ALTER SYSTEM SET synchronous_standby_names = '{SYNC}'")
        p.scalar("ALTER SYSTEM SET synchronous_commit = 'on'")
        p.scalar("SELECT pg_reload_conf()")
        want = f"{READ}=async,{SYNC}=sync"
        wait_for(lambda: p.scalar("SELECT string_agg(application_name || '=' || sync_state, ',' ORDER BY "
                                  "application_name) FROM pg_stat_replication") == want, 20, "the standbys to attach")
        yield tuple(made)
    finally:
        drops = [threading.Thread(target=c.drop) for c in made]  # independent: drop them side by side
        for t in drops:
            t.start()
        for t in drops:
            t.join()


@dataclass
class Drill:
    """The log, its producer and submitter token, and what clients observed over HTTP."""

    data: Path
    producer: Producer
    token: str
    public_key: bytes
    origin: str
    acked: list[dict] = field(default_factory=list)  # envelopes the service acknowledged, in order
    acked_at: dict[int, tuple[str, str]] = field(default_factory=dict)  # index -> (event id, leaf hash)
    checkpoints: dict[int, bytes] = field(default_factory=dict)  # every signed (size, root) a client saw
    base: int = 1  # entries before the first submitted event: the producer's key event (docs/keys.md)

    @property
    def size(self) -> int:
        """The log's size once everything acknowledged is stored."""
        return self.base + len(self.acked)

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def saw_checkpoint(self, cp: dict) -> None:
        """Check the log's signature on a served checkpoint and remember it; two different
        roots for one size would be a fork."""
        note = parse_and_verify(cp["note"], self.origin, self.public_key)
        assert (note.size, note.root) == (cp["size"], b64d(cp["root"])), cp
        assert self.checkpoints.setdefault(note.size, note.root) == note.root, f"two roots for size {note.size}"


def setup_log(data: Path, url: str) -> Drill:
    lg = Ledger.open(data, url)
    # Checkpoints by size inside appends (every 40 events) and, in the services restarted after
    # the failover, by time in their sweeps.
    info = lg.init_log(LOG, checkpoint_every_events=40, checkpoint_every_seconds=0.5)
    prod = Producer(LOG)
    lg.register_producer(LOG, prod.signer.public_key)
    token, _ = create_token(lg.tokens, "submitter", log_ids=[LOG], producer_key_ids=[prod.signer.key_id], run_ids=["*"])
    lg.close()
    return Drill(data, prod, token, info.public_key, info.origin)


def submit(svc: service.Service, d: Drill, batch: list[dict], client: httpx.Client | None = None) -> httpx.Response:
    c = client or httpx
    r = c.post(f"{svc.url}/v1/logs/{LOG}/events", json={"events": batch}, headers=d.auth, timeout=30)
    if r.status_code == 200:
        results = r.json()["results"]
        assert len(results) == len(batch) and not any(x["duplicate"] for x in results), r.text
        d.acked.extend(batch)
        for x in results:
            d.acked_at[x["index"]] = (x["event_id"], x["leaf_hash"])
    return r


def metric(svc: service.Service, name: str, **labels: str) -> float | None:
    text = httpx.get(f"{svc.url}/metrics", timeout=10).text
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
    return None


class Load:
    """One HTTP submitter (batches of 10, acknowledged events recorded) and two HTTP proof
    readers; the readers check every proof and count what they verified."""

    def __init__(self, svc: service.Service, d: Drill):
        self.svc, self.d = svc, d
        self.stop_reads, self.stop_writes = threading.Event(), threading.Event()
        self.proofs = 0
        self.requests = 0
        self.errors: list[str] = []
        self.submit_failure: str | None = None
        self.unacknowledged: list[dict] = []  # the batch in flight when submission failed
        self.threads = [threading.Thread(target=self._submit)] + [threading.Thread(target=self._read) for _ in range(2)]

    def _submit(self) -> None:
        with httpx.Client() as c:
            while not self.stop_writes.is_set():
                batch = self.d.producer.events(10)
                try:
                    r = submit(self.svc, self.d, batch, c)
                except httpx.HTTPError as e:  # the primary (or the service) died mid-request: not acknowledged
                    self.submit_failure, self.unacknowledged = f"{type(e).__name__}: {e}", batch
                    return
                except AssertionError as e:
                    self.errors.append(f"submission: {e}")
                    return
                if r.status_code != 200:
                    self.submit_failure, self.unacknowledged = f"{r.status_code}: {r.text[:300]}", batch
                    return

    def _read(self) -> None:
        rnd = random.Random()
        with httpx.Client() as c:
            while not self.stop_reads.is_set():
                known = sorted(self.d.acked_at)
                if not known:
                    time.sleep(0.01)
                    continue
                # The newest entry (possibly not replayed by the replica yet) or any acknowledged one.
                idx = known[-1] if rnd.random() < 0.3 else rnd.choice(known)
                try:
                    r = c.get(f"{self.svc.url}/v1/logs/{LOG}/entries/{idx}", timeout=30)
                except httpx.HTTPError:
                    return  # the service is going away
                self.requests += 1
                try:
                    self._check(idx, r)
                except AssertionError as e:
                    self.errors.append(f"entry {idx}: {e}")
                    return

    def _check(self, idx: int, r: httpx.Response) -> None:
        assert r.status_code == 200, r.text[:300]
        body = r.json()
        event_id, leaf = self.d.acked_at[idx]
        assert (body["index"], body["event_id"], body["leaf_hash"]) == (idx, event_id, leaf)
        proof = body["proof"]
        if proof is None:  # not covered by a checkpoint yet
            return
        cp = proof["checkpoint"]
        assert proof["tree_size"] == cp["size"] > idx  # never a proof for another size
        self.d.saw_checkpoint(cp)
        path = [b64d(h) for h in proof["inclusion"]]
        assert merkle.verify_inclusion(b64d(leaf), idx, cp["size"], path, b64d(cp["root"]))
        self.proofs += 1

    def start(self) -> None:
        for t in self.threads:
            t.start()

    def stop(self) -> None:
        self.stop_writes.set()
        self.stop_reads.set()
        for t in self.threads:
            t.join(30)


def replica_transactions(r: pgcluster.Cluster) -> int:
    """Transactions run on the replica's copy of the ledger database (a hot standby counts its own)."""
    return int(r.scalar("SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = 'ledger'"))


def serve_proofs_from_replica(svc: service.Service, d: Drill, r: pgcluster.Cluster) -> Load:
    """Start the load; return once the readers verified 40 proofs (the load keeps running)."""
    before = replica_transactions(r)
    load = Load(svc, d)
    load.start()
    wait_for(lambda: load.proofs >= 40 or load.errors or load.submit_failure, 30, "proofs under load")
    assert not load.errors and load.submit_failure is None, (load.errors, load.submit_failure)
    # The reads went to the replica: it ran at least one transaction per request (backends
    # publish their counts at most once a second, hence the wait), and only sizes or rows it
    # had not replayed yet were asked of the primary.
    requests = load.requests
    wait_for(lambda: replica_transactions(r) - before >= requests, 15, "the replica's transaction count")
    assert metric(svc, "ledger_replica_up") == 1
    assert metric(svc, "ledger_replica_fallbacks_total") < load.requests
    return load


def final_checks(svc: service.Service, d: Drill) -> None:
    """Every checkpoint any client saw is consistent with the newest one: no fork was signed."""
    size = httpx.get(f"{svc.url}/v1/logs/{LOG}", timeout=10).json()["size"]

    def covering() -> dict | None:
        c = httpx.get(f"{svc.url}/v1/logs/{LOG}/checkpoints/latest", timeout=10).json()
        return c if c["size"] == size else None

    latest = wait_for(covering, 15, "a checkpoint of the whole log")
    d.saw_checkpoint(latest)
    for c in httpx.get(f"{svc.url}/v1/logs/{LOG}/checkpoints", params={"limit": 1000}, timeout=10).json():
        d.saw_checkpoint(c)
    n, root_n = latest["size"], b64d(latest["root"])
    for m, root_m in sorted(d.checkpoints.items()):
        r = httpx.get(f"{svc.url}/v1/logs/{LOG}/consistency", params={"first": m, "second": n}, timeout=10)
        assert r.status_code == 200, r.text
        proof = [b64d(h) for h in r.json()["proof"]]
        assert merkle.verify_consistency(m, n, proof, root_m, root_n), f"checkpoint {m} forks from {n}"
    assert metric(svc, "ledger_log_signing_refused", log_id=LOG) == 0


def replica_size(r: pgcluster.Cluster) -> int:
    return int(r.scalar(f"SELECT size FROM logs WHERE log_id = '{LOG}'", db="ledger") or 0)


def sizes_the_replica_lacks(svc: service.Service, d: Drill, r: pgcluster.Cluster) -> None:
    """With the replica's replay paused, a checkpoint signed on the primary is beyond what the
    replica holds; reads naming its size or its entries are answered from the primary, correctly."""
    first = d.size
    wait_for(lambda: replica_size(r) == first, 15, "the replica to replay everything acknowledged")
    old = max(d.checkpoints)
    fallbacks = metric(svc, "ledger_replica_fallbacks_total")
    r.scalar("SELECT pg_wal_replay_pause()")
    try:
        assert submit(svc, d, d.producer.events((d.base - first) % 40 or 40)).status_code == 200
        n = d.size  # base + a multiple of 40: the append signed a checkpoint of n on the primary
        assert replica_size(r) == first
        cp = httpx.get(f"{svc.url}/v1/logs/{LOG}/checkpoints/{n}", timeout=10)
        assert cp.status_code == 200, cp.text
        d.saw_checkpoint(cp.json())
        res = httpx.get(f"{svc.url}/v1/logs/{LOG}/consistency", params={"first": old, "second": n}, timeout=10).json()
        assert merkle.verify_consistency(old, n, [b64d(h) for h in res["proof"]], d.checkpoints[old], d.checkpoints[n])
        e = httpx.get(f"{svc.url}/v1/logs/{LOG}/entries/{n - 1}", timeout=10).json()
        assert (e["event_id"], e["leaf_hash"]) == d.acked_at[n - 1]
        assert metric(svc, "ledger_replica_fallbacks_total") > fallbacks
    finally:
        r.scalar("SELECT pg_wal_replay_resume()")


@dataclass
class Branch:
    """One promoted standby with the service restarted on it, and what clients had seen."""

    svc: service.Service
    cluster: pgcluster.Cluster
    d: Drill


@dataclass
class Failover:
    sync: Branch
    lagging: Branch
    held: int  # entries the read replica had replayed when it was disconnected
    unacknowledged: list[dict]  # the batch in flight when the primary died (stored or not)


@pytest.fixture(scope="module")
def failover(clusters, tmp_path_factory) -> Failover:
    p, sync_sb, read = clusters
    data = tmp_path_factory.mktemp("failover") / "data"
    d = setup_log(data, p.url("ledger"))
    # No time-policy sweep on the primary's service: checkpoints only at sizes base + 40k (the
    # size policy counts from the empty tree's checkpoint; the key event is entry 0), signed
    # inside the append that reaches them (and published before it returns), so sizes are known.
    svc = service.start(data, p.url("ledger"), {"DATABASE_READ_URL": read.url("ledger")}, checkpoint_interval=0)
    try:
        load = serve_proofs_from_replica(svc, d, read)
        load.stop()
        assert not load.errors and load.submit_failure is None, (load.errors, load.submit_failure)
        sizes_the_replica_lacks(svc, d, read)
        if (d.size - d.base) % 40 == 0:  # the read replica is to hold entries beyond its last checkpoint
            assert submit(svc, d, d.producer.events(10)).status_code == 200
        held = d.size
        wait_for(lambda: replica_size(read) == held, 15, "the read replica to replay everything acknowledged")
        # The read replica falls behind (here: disconnected); the primary acknowledges a tail of
        # at least 25 events whose last append signs a checkpoint covering it.
        read.stop("fast")
        tail = d.producer.events((d.base - held) % 40 + (40 if (d.base - held) % 40 < 25 else 0))
        assert submit(svc, d, tail).status_code == 200
        latest = httpx.get(f"{svc.url}/v1/logs/{LOG}/checkpoints/latest", timeout=10).json()
        assert latest["size"] == d.size, latest  # from the primary: the replica is down
        d.saw_checkpoint(latest)
        # The kubelet's probe: ready (reads fall back to the primary); the metrics say the replica is down.
        assert httpx.get(f"{svc.url}/readyz", timeout=10).status_code == 200
        assert metric(svc, "ledger_replica_up") == 0
        # More load, and the primary stops hard while the submitter is committing.
        load = Load(svc, d)
        load.start()
        n = len(d.acked)
        wait_for(lambda: len(d.acked) >= n + 30 or load.errors or load.submit_failure, 30, "more acknowledged events")
        load.stop_reads.set()  # the readers' only database is about to go
        for t in load.threads[1:]:
            t.join(30)
        p.stop("immediate")
        load.threads[0].join(30)
        assert not load.errors, load.errors
        # The batch in flight was not acknowledged: the service answers 503 (retry later).
        assert load.submit_failure is not None and load.submit_failure.startswith("503"), load.submit_failure
        assert "database_unavailable" in load.submit_failure
        assert httpx.get(f"{svc.url}/readyz", timeout=10).status_code == 503  # the pod leaves the Service
    finally:
        svc.kill()
    # Each standby is promoted (in production: one of them) and gets the deployment as it was:
    # keys and the published record (copied), the Secret's database-url naming it.
    sync_sb.promote()
    read.start()
    read.promote()
    lagging_data = data.parent / "data-lagging"
    shutil.copytree(data, lagging_data)
    branches = []
    for cluster, data_dir, interval in ((sync_sb, data, 0.5), (read, lagging_data, 0.2)):
        twin = Producer(LOG, d.producer.signer)  # the same producer, from the same point
        twin.heads = dict(d.producer.heads)
        dd = replace(d, data=data_dir, producer=twin, acked=list(d.acked), acked_at=dict(d.acked_at),
                     checkpoints=dict(d.checkpoints))
        branches.append(Branch(service.launch(data_dir, cluster.url("ledger"), checkpoint_interval=interval), cluster, dd))
    try:
        for b in branches:  # both started side by side, then waited for
            b.svc.wait_alive()
        yield Failover(branches[0], branches[1], held, load.unacknowledged)
    finally:
        for b in branches:
            b.svc.stop()


def test_sync_standby_has_every_acknowledged_event_and_signs_on(failover):
    svc, d = failover.sync.svc, failover.sync.d
    assert httpx.get(f"{svc.url}/readyz", timeout=10).status_code == 200, svc.log()[-2000:]
    assert len(d.acked) >= 100
    # Synchronous: no acknowledged event is lost. Each one, re-submitted, is a duplicate at
    # the index and with the leaf hash it was acknowledged with.
    for j in range(0, len(d.acked), 500):
        res = httpx.post(f"{svc.url}/v1/logs/{LOG}/events", json={"events": d.acked[j : j + 500]}, headers=d.auth, timeout=60)
        assert res.status_code == 200, res.text
        for x in res.json()["results"]:
            assert x["duplicate"] and d.acked_at[x["index"]] == (x["event_id"], x["leaf_hash"]), x
    # The producer re-sends the batch that was in flight (stored or not: either is fine), then
    # goes on.
    res = httpx.post(f"{svc.url}/v1/logs/{LOG}/events", json={"events": failover.unacknowledged}, headers=d.auth, timeout=10)
    assert res.status_code == 200, res.text
    assert submit(svc, d, d.producer.events(5)).status_code == 200
    final_checks(svc, d)
    lg = Ledger.open(d.data, failover.sync.cluster.url("ledger"), migrate=False)
    assert audit(lg, LOG) == []
    lg.close()


def test_lagging_standby_refuses_to_sign_until_recovered(failover, tmp_path):
    svc, d, held = failover.lagging.svc, failover.lagging.d, failover.held
    assert httpx.get(f"{svc.url}/v1/logs/{LOG}", timeout=10).json()["size"] == held
    ready = httpx.get(f"{svc.url}/readyz", timeout=10)
    assert ready.status_code == 503 and ready.json()["type"].endswith("log_refusing_to_sign"), ready.text
    why = ready.json()["detail"]
    m = re.search(rf"log {LOG}: the database holds {held} entries but a checkpoint of size (\d+) was already published", why)
    assert m and "rlhf-ledger recover" in why, why
    published = int(m.group(1))  # at least what clients saw (more if the batch in flight signed one)
    assert published >= max(d.checkpoints) > held and (published - d.base) % 40 == 0
    assert f"refusing to sign: log {LOG}: the database holds {held} entries" in svc.log()
    assert metric(svc, "ledger_log_signing_refused", log_id=LOG) == 1 and metric(svc, "ledger_ready") == 0
    # A new event is refused (503: retry later) and not stored: it would take an index the
    # published checkpoint gives to another event.
    pending = d.producer.events(1)
    res = httpx.post(f"{svc.url}/v1/logs/{LOG}/events", json={"events": pending}, headers=d.auth, timeout=10)
    assert res.status_code == 503 and res.json()["type"].endswith("signing_refused"), res.text
    # The entries beyond the last checkpoint are due for one (0.5 s time policy); three sweeps
    # (every 0.2 s) later, none was signed.
    time.sleep(0.6)
    sizes = [c["size"] for c in httpx.get(f"{svc.url}/v1/logs/{LOG}/checkpoints", params={"limit": 1000}).json()]
    assert max(sizes) < held and httpx.get(f"{svc.url}/v1/logs/{LOG}", timeout=10).json()["size"] == held

    # Recovery (the operator, e.g. as a Job): the producer's record of the events it signed.
    signed = d.acked + failover.unacknowledged
    spool = tmp_path / "producer-events.jsonl"
    spool.write_text("".join(json.dumps(e) + "\n" for e in signed))
    out = subprocess.run([sys.executable, "-m", "rlhf_ledger.cli", "recover", "--data-dir", str(d.data), "--database-url",
                          failover.lagging.cluster.url("ledger"), "--log", LOG, str(spool)], capture_output=True, text=True,
                         timeout=120, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.returncode == 0 and f"size {held} -> {d.base + len(signed)}" in out.stdout, out.stdout + out.stderr
    wait_for(lambda: httpx.get(f"{svc.url}/readyz", timeout=10).status_code == 200, 15, "ready after recovery")
    res = httpx.post(f"{svc.url}/v1/logs/{LOG}/events", json={"events": pending}, headers=d.auth, timeout=10)
    assert res.status_code == 200 and res.json()["results"][0]["index"] == d.base + len(signed), res.text  # the retry succeeds
    final_checks(svc, d)  # includes the checkpoints covering the tail, published before the failover
    lg = Ledger.open(d.data, failover.lagging.cluster.url("ledger"), migrate=False)
    assert audit(lg, LOG) == []
    lg.close()
