"""The run index computed from storage (docs/run-index.md): `run_records` keeps each run's
record and the compact range of its leaves as of the sizes at which the index was computed, and
a new size extends them with the entries in between. The records and notes themselves are
rlhf_ledger.core.run_index.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import TYPE_CHECKING

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from rlhf_ledger.core import merkle
from rlhf_ledger.core.errors import LedgerError
from rlhf_ledger.core.jcs import canonicalize
from rlhf_ledger.core.run_index import RunIndex, _RunState, _sort_key, record_leaf, sign_index, sign_note  # noqa: F401
from rlhf_ledger.store import db

if TYPE_CHECKING:
    from rlhf_ledger.store.ledger import Ledger


def _computed_sizes(conn: Connection, log_id: str) -> list[int]:
    ri = db.run_indexes.c
    return [int(r[0]) for r in conn.execute(sa.select(ri.size).where(ri.log_id == log_id).order_by(ri.size))]


def _latest_records(conn: Connection, log_id: str, size: int, run_ids: Iterable[str] | None = None) -> dict[str, sa.Row]:
    """Per run, its newest stored record at a size <= `size` (optionally only `run_ids`)."""
    rr = db.run_records.c
    newest = (sa.select(rr.run_id, sa.func.max(rr.size).label("size"))
              .where(rr.log_id == log_id, rr.size <= size).group_by(rr.run_id))
    if run_ids is not None:
        ids = sorted(set(run_ids))
        if not ids:
            return {}
        newest = newest.where(rr.run_id.in_(ids))
    sub = newest.subquery()
    q = (sa.select(rr.run_id, rr.size, rr.record, rr.record_hash, rr.frontier)
         .join(sub, sa.and_(rr.run_id == sub.c.run_id, rr.size == sub.c.size))
         .where(rr.log_id == log_id))
    return {r.run_id: r for r in conn.execute(q)}


def _compute(conn: Connection, log_id: str, size: int) -> None:
    """Store the records of every run touched in [base, size), base = the newest computed size
    <= size (0 if none); records of untouched runs carry over unchanged."""
    computed = [s for s in _computed_sizes(conn, log_id) if s <= size]
    base = computed[-1] if computed else 0
    e = db.entries.c
    states: dict[str, _RunState] = {}
    last = base - 1
    while True:  # page through the new entries (memory bounded by the touched runs)
        rows = conn.execute(
            sa.select(e.idx, e.run_id, e.producer, e.seq, e.event_id, e.type, e.leaf_hash)
            .where(e.log_id == log_id, e.idx > last, e.idx < size).order_by(e.idx).limit(20000)
        ).all()
        if not rows:
            break
        fresh = {r.run_id for r in rows} - states.keys()
        for run_id, row in _latest_records(conn, log_id, base, fresh).items():
            states[run_id] = _RunState.load(row.record, row.frontier)
        for r in rows:
            st = states.setdefault(r.run_id, _RunState())
            st.events += 1
            merkle.compact_push(st.frontier, bytes(r.leaf_hash))
            st.producers[r.producer] = (int(r.seq), r.event_id)
            st.ended = st.ended or r.type == "run.end"
        last = rows[-1].idx
    if last != size - 1 and size > base:
        raise LedgerError(f"entries below {size} are missing (read up to index {last})", where=f"log {log_id!r}")
    rr = db.run_records
    conn.execute(rr.delete().where(rr.c.log_id == log_id, rr.c.size == size))
    rows_out = []
    for run_id, st in states.items():
        rec = st.record(run_id)
        rows_out.append({"log_id": log_id, "run_id": run_id, "size": size, "record": canonicalize(rec).decode("utf-8"),
                         "record_hash": record_leaf(rec), "frontier": st.frontier_json()})
    for j in range(0, len(rows_out), 500):
        conn.execute(rr.insert(), rows_out[j:j + 500])


def _leaves(conn: Connection, log_id: str, size: int) -> list[tuple[str, bytes]]:
    recs = _latest_records(conn, log_id, size)
    return sorted(((run_id, bytes(r.record_hash)) for run_id, r in recs.items()), key=lambda x: _sort_key(x[0]))


def run_index(ledger: Ledger, log_id: str, size: int) -> RunIndex:
    """The signed run index at tree size `size` (computed and stored on first use)."""
    if size <= 0:
        raise LedgerError("the run index of an empty tree is not signed", where=f"log {log_id!r}")
    ri = db.run_indexes.c
    q = sa.select(db.run_indexes).where(ri.log_id == log_id, ri.size == size)
    rows = ledger.database.rows(q)  # the usual case: signed already, no write lock
    row = rows[0] if rows else None
    if row is not None:
        return RunIndex(size, int(row._mapping["count"]), bytes(row.root), row.note)
    with ledger.database.write() as conn:
        row = conn.execute(q).first()  # another process may have signed it meanwhile
        if row is not None:
            return RunIndex(size, int(row._mapping["count"]), bytes(row.root), row.note)
        info = ledger.log_info(log_id, conn)
        if size > info.size:
            raise LedgerError(f"tree size {size} is beyond the log's size {info.size}", where=f"log {log_id!r}")
        _compute(conn, log_id, size)
        leaves = [h for _, h in _leaves(conn, log_id, size)]
        tree = merkle.InMemoryTree()
        tree.extend_leaf_hashes(leaves)
        root = tree.root()
        note = sign_note(info.origin, size, len(leaves), root, ledger.log_signer(log_id, info.public_key))
        conn.execute(db.run_indexes.insert().values(log_id=log_id, size=size, count=len(leaves), root=root, note=note))
        return RunIndex(size, len(leaves), root, note)


def run_membership(ledger: Ledger, log_id: str, run_id: str, size: int) -> tuple[RunIndex, dict, int, list[bytes]]:
    """(signed index at `size`, the run's record, its position, its inclusion proof)."""
    idx = run_index(ledger, log_id, size)
    leaves, rec = ledger.database.read(lambda conn: (_leaves(conn, log_id, size),
                                                      _latest_records(conn, log_id, size, [run_id]).get(run_id)))
    if rec is None:
        raise LedgerError(f"run {run_id!r} has no entries below tree size {size}", where=f"log {log_id!r}",
                          code="not_found")
    position = next(i for i, (r, _) in enumerate(leaves) if r == run_id)
    tree = merkle.InMemoryTree()
    tree.extend_leaf_hashes([h for _, h in leaves])
    if tree.root() != idx.root:
        raise LedgerError(f"stored run records at size {size} disagree with the signed run index",
                          where=f"log {log_id!r}")
    return idx, json.loads(rec.record), position, tree.inclusion_proof(position)


