"""Reads never take SQLite's write lock (issue 13, item 3): while another connection holds it
(BEGIN IMMEDIATE, as a long append does), a token lookup, which every authenticated request
makes, and the other reads of the service (readiness, metrics, anchors, entries, proofs,
bundles) complete.

Deterministic, no timing threshold: the lock holder keeps the write lock until the read under
test has returned (or 10 s passed) and says when it starts to let go. A read that queued for
the lock could only return after that, so it fails the assertion on any machine. The harness
is shown to catch such a read (a read on the writer engine waits), and the lock to be really
held (another writer is refused at once).
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from rlhf_ledger.api import tokens as tok
from rlhf_ledger.core.anchor_status import AnchorStatus
from rlhf_ledger.core.roles import Role
from rlhf_ledger.export.bundle import Scope, iter_bundle_lines
from rlhf_ledger.store.ledger import Ledger
from rlhf_ledger.store.run_list import list_runs
from tests.ledger.helpers import Producer

LOG = "reads"


class WriteLockHolder:
    """Holds SQLite's write lock on `path` in its own thread and connection until `finish()`
    (or `hold` seconds), like an append that takes long."""

    def __init__(self, path: Path, hold: float = 10.0):
        self.path, self.hold = path, hold
        self.locked = threading.Event()
        self.finished = threading.Event()
        self.releasing = threading.Event()  # set before the lock is given up
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            conn = sqlite3.connect(self.path, timeout=60, isolation_level=None)
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("UPDATE logs SET size = size WHERE log_id = ?", (LOG,))  # a write, as an append's
            self.locked.set()
            self.finished.wait(self.hold)
            self.releasing.set()
            conn.execute("ROLLBACK")
            conn.close()
        except BaseException as e:  # noqa: BLE001 - reported by the test
            self.error = e
            self.locked.set()

    def __enter__(self) -> WriteLockHolder:
        self.thread.start()
        assert self.locked.wait(30) and self.error is None, self.error
        return self

    def finish(self) -> None:
        self.finished.set()

    def __exit__(self, *exc: object) -> None:
        self.finish()
        self.thread.join(30)


def _returned_while_locked(path: Path, read: Callable[[], Any], hold: float = 10.0) -> tuple[bool, Any]:
    """Run `read` while the write lock is held; (did it return before the holder let go, its result)."""
    with WriteLockHolder(path, hold) as holder:
        other = sqlite3.connect(path, timeout=0, isolation_level=None)
        try:
            with pytest.raises(sqlite3.OperationalError, match="locked"):
                other.execute("BEGIN IMMEDIATE")  # the lock is really held: another writer is refused
        finally:
            other.close()
        result = read()
        returned_first = not holder.releasing.is_set()
        holder.finish()
    return returned_first, result


@pytest.fixture
def setup(tmp_path):
    ledger = Ledger.open(tmp_path / "data")
    ledger.init_log(LOG, checkpoint_every_events=1000)
    producer = Producer(LOG)
    ledger.register_producer(LOG, producer.signer.public_key)
    ledger.append(producer.events(5), log_id=LOG)
    ledger.checkpoint(LOG)
    text, _ = tok.create_token(ledger.tokens, Role.ADMIN, label="reader")
    anchor = ledger.anchors.insert(LOG, checkpoint_size=ledger.size(LOG), prev_size=0, status=AnchorStatus.PENDING)
    # The run index is computed (a write) on first use: a first export stores it; later ones only read.
    "".join(iter_bundle_lines(ledger, LOG, Scope("run", run_id="run-1")))
    yield ledger, tmp_path / "data" / "ledger.sqlite3", text, anchor
    ledger.close()


def test_token_lookup_does_not_wait_behind_a_held_write_lock(setup):
    ledger, path, text, _ = setup
    returned_first, principal = _returned_while_locked(path, lambda: tok.lookup(ledger.tokens, text))
    assert returned_first, "the token lookup waited for the write lock"
    assert principal is not None and principal.role == Role.ADMIN


READS: dict[str, Callable[[Ledger, Any], Any]] = {
    "token listing": lambda lg, a: tok.list_tokens(lg.tokens),
    "readiness ping": lambda lg, a: lg.ping(),
    "fork check (/readyz, each anchoring pass)": lambda lg, a: lg.fork_check(LOG),
    "log listing": lambda lg, a: lg.list_logs(),
    "lag gauges": lambda lg, a: lg.log_lags(),
    "unanchored age gauge": lambda lg, a: lg.oldest_unanchored(),
    "anchor rows by status": lambda lg, a: lg.anchors.counts_by_status(),
    "anchor listing": lambda lg, a: lg.anchors.page(LOG),
    "anchor by id": lambda lg, a: lg.anchors.get(LOG, a.id),
    "anchors covering an entry": lambda lg, a: lg.anchors.covering(LOG, 0),
    "lease holder": lambda lg, a: lg.lease(f"anchor:{LOG}").current_holder(),
    "entry": lambda lg, a: lg.get_entry(LOG, 1),
    "inclusion proof": lambda lg, a: lg.inclusion_proof(LOG, 1),
    "run listing": lambda lg, a: list_runs(lg, LOG),
    "run bundle export": lambda lg, a: "".join(iter_bundle_lines(lg, LOG, Scope("run", run_id="run-1"))),
}


@pytest.mark.parametrize("what", sorted(READS))
def test_service_reads_do_not_wait_behind_a_held_write_lock(setup, what):
    ledger, path, _, anchor = setup
    returned_first, _ = _returned_while_locked(path, lambda: READS[what](ledger, anchor))
    assert returned_first, f"{what} waited for the write lock"


@pytest.mark.slow
def test_the_harness_catches_a_read_that_takes_the_write_lock(setup):
    """The same read on the writer engine (BEGIN IMMEDIATE, what token lookups, anchor listings
    and /readyz used before) queues until the holder lets go: the harness reports it."""
    ledger, path, text, _ = setup

    def read_on_writer() -> Any:
        with ledger.engine.connect() as conn:
            row = conn.execute(sa.text("SELECT count(*) FROM api_tokens")).scalar()
            conn.rollback()
        return row

    returned_first, count = _returned_while_locked(path, read_on_writer, hold=0.5)
    assert not returned_first and count == 1
