"""Erasure that erases and is recorded (docs/storage.md "Payloads and erasure").

`erase_run` destroys one run's data key, `erase_subject` one data subject's key (that person's
openings in every run and log). Each writes, in the transaction that destroys the key, an
`erasure` event (docs/event-types.md) to every log that held data under it: a record of the log
itself, in the reserved run `rlhf-ledger:erasures`, signed by the log key. The same transaction
re-wraps every remaining key under a new KEK; after the commit the older KEK files are shredded
and the database drops its old row versions, so no stored copy of the destroyed key can be
unwrapped. Erasing again writes no second event but repeats the rotation and the shredding, so
it finishes an erasure interrupted after its commit.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from rlhf_ledger.core.errors import EventError, LedgerError, NotFoundError
from rlhf_ledger.core.events import valid_id, valid_subject
from rlhf_ledger.store import db

if TYPE_CHECKING:
    from rlhf_ledger.store.ledger import AppendResult, Ledger

ERASURES_RUN = "rlhf-ledger:erasures"
ERASURE = "erasure"


@dataclass
class Erasure:
    """What an erasure did. `recorded`: (log id, index) of the erasure events written now;
    `previous`: those written by an earlier erasure of the same thing (`already` erased)."""

    kind: str  # "run" | "subject"
    target: str  # the run id or the subject's pseudonym
    already: bool = False
    recorded: list[tuple[str, int]] = field(default_factory=list)
    previous: list[tuple[str, int]] = field(default_factory=list)
    entries: dict[str, int] = field(default_factory=dict)  # log id -> entries with openings under the key
    runs: dict[str, int] = field(default_factory=dict)  # log id -> runs of those entries (subject erasure)


@dataclass(frozen=True)
class SubjectPlace:
    """Where a subject's openings are: one (log, run) with its entry count."""

    log_id: str
    run_id: str
    entries: int


def _is_deadlock(e: Exception) -> bool:
    return "deadlock" in str(e).lower()


def _rotate(ledger: Ledger, conn: Connection) -> bytes:
    """Inside the erasure's transaction: a new KEK, and every remaining run and subject key
    re-wrapped under it. Returns the new KEK's id (older KEK files are shredded after commit).

    PostgreSQL: the advisory lock (727276, 1) is taken here, after any log lock, as appenders
    take it after their log lock when they make a new key, so no key is wrapped under a KEK
    being replaced and the two orders cannot cross.
    """
    if not ledger._sqlite:
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(727276, 1)"))
    crypto = ledger._payload_crypto()
    new = crypto.ring.rotate()
    rk, sk = db.run_keys.c, db.subject_keys.c
    for r in conn.execute(sa.select(rk.log_id, rk.run_id, rk.wrapped_key).where(rk.wrapped_key.is_not(None))).all():
        key = crypto.unwrap(r.wrapped_key, r.log_id, r.run_id)
        conn.execute(db.run_keys.update().where(rk.log_id == r.log_id, rk.run_id == r.run_id)
                     .values(wrapped_key=crypto.wrap(key, r.log_id, r.run_id, kek=new)))
    for r in conn.execute(sa.select(sk.subject, sk.wrapped_key).where(sk.wrapped_key.is_not(None))).all():
        key = crypto.unwrap_subject(r.wrapped_key, r.subject)
        conn.execute(db.subject_keys.update().where(sk.subject == r.subject)
                     .values(wrapped_key=crypto.wrap_subject(key, r.subject, kek=new)))
    return new[0]


def _finish(ledger: Ledger, new_kek: bytes) -> None:
    """After the commit: shred the KEK files older than the new one, drop old row versions."""
    ledger._payload_crypto().ring.shred_older_than(new_kek)
    _drop_old_copies(ledger)


def _drop_old_copies(ledger: Ledger) -> None:
    """Old row versions out of the database files: SQLite WAL frames, PostgreSQL dead tuples."""
    if ledger._sqlite:
        deadline = time.time() + ledger.erase_wait_seconds
        while True:
            with ledger.database.writer.connect() as conn:
                raw = conn.connection.driver_connection
                assert raw is not None  # a checked-out connection always holds its sqlite3 connection
                busy, _, _ = raw.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            if not busy:
                return
            if time.time() > deadline:  # a reader held a snapshot all along; say so, do not hide it
                raise LedgerError("erased, but the WAL could not be truncated (a reader holds a snapshot); "
                                  "run the erasure again once readers are idle", code="wal_busy")
            time.sleep(0.1)
    else:
        with ledger.database.writer.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            # VACUUM FULL keeps a dead row version while anything older than the erasure may
            # still need it: a snapshot in this database, or a transaction holding an xid in any
            # database of the server (a prepared one, a replication slot's xmin). Wait for them
            # (30 s, as for the SQLite WAL), else say so. Sessions of other roles whose state is
            # hidden from us cannot be waited for (docs/storage.md).
            t0 = conn.exec_driver_sql("SELECT mod(txid_snapshot_xmax(txid_current_snapshot()), 4294967296)").scalar()
            deadline = time.time() + ledger.erase_wait_seconds
            while True:
                older = conn.exec_driver_sql(
                    "SELECT 'pid ' || pid FROM pg_stat_activity WHERE pid <> pg_backend_pid() AND ("
                    " (datname = current_database() AND backend_xmin IS NOT NULL AND age(backend_xmin) > age(%(t)s::text::xid))"
                    " OR (backend_xid IS NOT NULL AND age(backend_xid) > age(%(t)s::text::xid)))"
                    " UNION ALL SELECT 'prepared transaction ' || gid FROM pg_prepared_xacts"
                    " WHERE age(transaction) > age(%(t)s::text::xid)"
                    " UNION ALL SELECT 'replication slot ' || slot_name FROM pg_replication_slots"
                    " WHERE xmin IS NOT NULL AND age(xmin) > age(%(t)s::text::xid) LIMIT 1",
                    {"t": str(t0)}).first()
                if older is None:
                    break
                if time.time() > deadline:
                    raise LedgerError(f"erased, but a transaction begun before the erasure still runs ({older[0]}): "
                                      "the database keeps the old row version for it; run the erasure again once "
                                      "it has ended", code="snapshot_busy")
                time.sleep(0.1)
            conn.exec_driver_sql("VACUUM FULL run_keys, subject_keys")


def _record(conn: Connection, log_id: str, r: AppendResult, kind: str, target: str) -> None:
    conn.execute(db.erasures.insert().values(log_id=log_id, idx=r.index, kind=kind, target=target, erased_at=time.time()))


def _previous(conn: Connection, kind: str, target: str) -> list[tuple[str, int]]:
    e = db.erasures.c
    return [(r.log_id, int(r.idx)) for r in conn.execute(
        sa.select(e.log_id, e.idx).where(e.kind == kind, e.target == target).order_by(e.log_id, e.idx))]


def _with_retries(fn):
    for attempt in range(5):
        try:
            return fn()
        except sa.exc.OperationalError as e:  # pragma: no cover - depends on lock timing (PostgreSQL)
            if not _is_deadlock(e) or attempt == 4:
                raise
    raise AssertionError("unreachable")


# --- runs ---------------------------------------------------------------------------------------


def erase_run(ledger: Ledger, log_id: str, run_id: str) -> Erasure:
    """Destroy the run's data key (every opening of the run, subject-keyed ones included, since
    they are sealed inside the run key's layer) and append the log's `erasure` event, in one
    transaction under the log's write lock (`Ledger._append_admin`)."""
    if not valid_id(run_id):
        raise EventError("a run id matches [A-Za-z0-9][A-Za-z0-9._:/-]{0,127}", where="run_id")
    ledger.log_info(log_id)  # NotFoundError for an unknown log
    rk = db.run_keys.c
    out = Erasure("run", run_id)
    state: dict = {}

    def decide(conn: Connection) -> dict | None:
        row = conn.execute(sa.select(db.run_keys).where(rk.log_id == log_id, rk.run_id == run_id)).first()
        if row is None:
            raise NotFoundError(f"run {run_id!r} has no stored openings in log {log_id!r}: nothing to erase",
                                where=f"log {log_id!r}")
        out.previous = [x for x in _previous(conn, "run", run_id) if x[0] == log_id]
        if row.wrapped_key is None and out.previous:
            out.already = True
            state["kek"] = _rotate(ledger, conn)  # no event: only finish what an interrupted erasure left
            return None
        p = db.payloads.c
        n = conn.execute(sa.select(sa.func.count()).select_from(db.payloads)
                         .where(p.log_id == log_id, p.run_id == run_id)).scalar_one()
        out.entries[log_id] = int(n)
        return {"erased": "run", "run_id": run_id, "entries": int(n)}

    def after(conn: Connection, r: AppendResult) -> None:
        conn.execute(db.run_keys.update().where(rk.log_id == log_id, rk.run_id == run_id)
                     .values(wrapped_key=None, erased_at=sa.func.coalesce(rk.erased_at, time.time())))
        _record(conn, log_id, r, "run", run_id)
        out.recorded.append((log_id, r.index))
        state["kek"] = _rotate(ledger, conn)

    def once() -> None:
        state.clear()
        out.already, out.recorded = False, []
        ledger._append_admin(log_id, ERASURES_RUN, ERASURE, decide, after)

    _with_retries(once)
    _finish(ledger, state["kek"])
    return out


# --- subjects -----------------------------------------------------------------------------------


def subject_places(ledger: Ledger, subject: str) -> list[SubjectPlace]:
    """Every (log, run) holding an opening that names the subject, with its entry count."""
    so = db.subject_openings.c
    rows = ledger.database.rows(sa.select(so.log_id, so.run_id, sa.func.count(sa.distinct(so.idx)))
                                .where(so.subject == subject).group_by(so.log_id, so.run_id).order_by(so.log_id, so.run_id),
                                replica=True)
    return [SubjectPlace(r[0], r[1], int(r[2])) for r in rows]


def _check_subject(subject: str) -> None:
    if not valid_subject(subject):
        raise EventError("a data subject is named by its keyed pseudonym anp:<64 lowercase hex> (docs/sdk.md)",
                         where="subject")


def subject_state(ledger: Ledger, subject: str) -> tuple[str, list[SubjectPlace], list[tuple[str, int]]]:
    """("active" | "erased", where its openings are, its erasure events) or NotFoundError."""
    _check_subject(subject)
    sk, e = db.subject_keys.c, db.erasures.c
    rows = ledger.database.rows(sa.select(sk.wrapped_key).where(sk.subject == subject), replica=True)
    if not rows:
        raise NotFoundError(f"no stored opening names subject {subject}", where="subject")
    events = [(r.log_id, int(r.idx)) for r in ledger.database.rows(
        sa.select(e.log_id, e.idx).where(e.kind == "subject", e.target == subject).order_by(e.log_id, e.idx), replica=True)]
    return ("erased" if rows[0].wrapped_key is None else "active"), subject_places(ledger, subject), events


class _LogsMoved(Exception):
    """A log gained openings of the subject between our reading and our locks: lock it too."""


def erase_subject(ledger: Ledger, subject: str) -> Erasure:
    """Destroy the subject's key (their openings in every run and log) and append an `erasure`
    event to every log that holds such an opening, all in one transaction that holds those logs'
    write locks (in log-id order) and the subject's key row."""
    _check_subject(subject)
    extra: set[str] = set()
    for _ in range(10):
        try:
            return _with_retries(lambda: _erase_subject_once(ledger, subject, extra))
        except _LogsMoved:
            continue
    raise LedgerError("appends kept adding openings of this subject to other logs; try again", code="busy")


def _erase_subject_once(ledger: Ledger, subject: str, extra: set[str]) -> Erasure:
    so, sk = db.subject_openings.c, db.subject_keys.c
    out = Erasure("subject", subject)
    signed: list = []  # (log id, log key, checkpoint an erasure event's append signed or None)

    def logs_now(conn: Connection) -> set[str]:
        return {r[0] for r in conn.execute(sa.select(so.log_id).where(so.subject == subject).distinct())}

    with ledger.database.write() as conn:
        logs = sorted(logs_now(conn) | extra)
        locked = {log_id: ledger._lock_log(conn, log_id) for log_id in logs}
        q = sa.select(sk.wrapped_key).where(sk.subject == subject)
        if not ledger._sqlite:
            q = q.with_for_update()  # appenders read it FOR SHARE: none can seal under it meanwhile
        key = conn.execute(q).first()
        if key is None:
            raise NotFoundError(f"no stored opening names subject {subject}", where="subject")
        moved = logs_now(conn) - set(logs)
        if moved:
            extra |= moved
            raise _LogsMoved()
        out.previous = _previous(conn, "subject", subject)
        done = {log_id for log_id, _ in out.previous}
        todo = [log_id for log_id in logs if log_id not in done]
        out.already = key.wrapped_key is None and not todo
        if not out.already:
            conn.execute(db.subject_keys.update().where(sk.subject == subject)
                         .values(wrapped_key=None, erased_at=sa.func.coalesce(sk.erased_at, time.time())))
            for log_id in todo:
                n, runs = conn.execute(sa.select(sa.func.count(sa.distinct(so.idx)), sa.func.count(sa.distinct(so.run_id)))
                                       .where(so.subject == subject, so.log_id == log_id)).one()
                body = {"erased": "subject", "subject": subject, "entries": int(n), "runs": int(runs)}
                r, cp = ledger._append_admin_in(conn, log_id, locked[log_id], ERASURES_RUN, ERASURE, body)
                signed.append((log_id, locked[log_id].public_key, cp))
                _record(conn, log_id, r, "subject", subject)
                out.recorded.append((log_id, r.index))
                out.entries[log_id], out.runs[log_id] = int(n), int(runs)
        new = _rotate(ledger, conn)
    for log_id, public_key, cp in signed:  # committed: the checkpoints appends signed are served now
        ledger._published(log_id, public_key, cp)
    _finish(ledger, new)
    return out
