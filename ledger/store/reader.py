"""The reader part of the `Ledger` gateway: entries, proofs and checkpoints, read from stored
nodes (never by rebuilding the tree) in read transactions that never take the write lock
(store/database.py), from a streaming replica first when one is configured (store/replica.py).
"""

from __future__ import annotations

import base64
from collections.abc import Iterator

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from rlhf_ledger.core import merkle
from rlhf_ledger.core.checkpoints import Checkpoint
from rlhf_ledger.core.errors import NotFoundError, ProofError
from rlhf_ledger.store import db
from rlhf_ledger.store.base import LedgerBase
from rlhf_ledger.store.records import EntryRecord, EntrySpan, SealedPayload


def node_getter(conn: Connection, log_id: str) -> merkle.NodeGetter:
    """Point lookups of stored nodes (leaves from `entries`, inner nodes from `nodes`).

    A UNION ALL of (log_id, level, idx) equality lookups: both SQLite and PostgreSQL answer
    each part from the primary-key index, whereas SQLite scans the whole log for a
    row-value IN list.
    """
    mark = "?" if conn.dialect.paramstyle == "qmark" else "%s"
    inner = f"SELECT level, idx, hash FROM nodes WHERE log_id = {mark} AND level = {mark} AND idx = {mark}"
    # Leaves (level 0) are the entries' leaf hashes; the constant level keeps one row shape.
    leaf = f"SELECT 0, idx, leaf_hash FROM entries WHERE log_id = {mark} AND {mark} = 0 AND idx = {mark}"

    def get(keys: list[merkle.NodeKey]) -> dict[merkle.NodeKey, bytes]:
        out: dict[merkle.NodeKey, bytes] = {}
        for j in range(0, len(keys), 200):  # SQLite allows 500 terms in a compound SELECT
            part = keys[j : j + 200]
            sql = " UNION ALL ".join(leaf if lv == 0 else inner for lv, _ in part)
            params = tuple(x for lv, ix in part for x in (log_id, lv, ix))
            for lv, ix, h in conn.exec_driver_sql(sql, params):
                out[(lv, ix)] = bytes(h)
        return out

    return get


def last_checkpoint_size(conn: Connection, log_id: str) -> int:
    """The size of the log's newest checkpoint, -1 if none."""
    v = conn.execute(sa.select(sa.func.max(db.checkpoints.c.size)).where(db.checkpoints.c.log_id == log_id)).scalar()
    return -1 if v is None else int(v)


class ReaderMixin(LedgerBase):
    # --- Merkle reads ---------------------------------------------------------------------

    def stored_nodes(self, log_id: str, keys: list[merkle.NodeKey]) -> dict[merkle.NodeKey, bytes]:
        """Stored tree nodes by (level, index); absent keys are left out."""
        return self.database.read(lambda conn: node_getter(conn, log_id)(list(keys)), replica=True)

    def size(self, log_id: str) -> int:
        return self.log_info(log_id).size

    def root(self, log_id: str, size: int | None = None) -> bytes:
        def run(conn: Connection) -> bytes:
            cur = self.log_info(log_id, conn).size
            n = cur if size is None else size
            if not 0 <= n <= cur:
                raise ProofError(f"tree size {n} is beyond the log size {cur}", where=log_id)
            return merkle.root(n, node_getter(conn, log_id))

        return self.database.read(run, replica=True)

    def inclusion_proof(self, log_id: str, index: int, size: int | None = None) -> tuple[int, list[bytes]]:
        """Proof that entry `index` is in the tree of `size` (default: latest checkpoint's size)."""

        def run(conn: Connection) -> tuple[int, list[bytes]]:
            n = size if size is not None else last_checkpoint_size(conn, log_id)
            cur = self.log_info(log_id, conn).size
            if not 0 <= index < n <= cur:
                raise ProofError(f"need 0 <= index < size <= {cur}; got index {index}, size {n}", where=log_id)
            return n, merkle.inclusion_proof(index, n, node_getter(conn, log_id))

        return self.database.read(run, replica=True)

    def consistency_proof(self, log_id: str, m: int, n: int) -> list[bytes]:
        def run(conn: Connection) -> list[bytes]:
            cur = self.log_info(log_id, conn).size
            if not 0 <= m <= n <= cur:
                raise ProofError(f"need 0 <= first <= second <= {cur}; got {m}, {n}", where=log_id)
            return merkle.consistency_proof(m, n, node_getter(conn, log_id))

        return self.database.read(run, replica=True)

    # --- checkpoints ----------------------------------------------------------------------

    def _checkpoint_created(self, log_id: str, size: int) -> float:
        rows = self.database.rows(
            sa.select(db.checkpoints.c.created_at).where(db.checkpoints.c.log_id == log_id, db.checkpoints.c.size == size),
            replica=True)
        return rows[0].created_at if rows else 0.0

    def latest_checkpoint(self, log_id: str) -> Checkpoint | None:
        rows = self.database.rows(
            sa.select(db.checkpoints).where(db.checkpoints.c.log_id == log_id).order_by(db.checkpoints.c.size.desc()).limit(1),
            replica=True)
        return Checkpoint(self.log_info(log_id).origin, rows[0].size, rows[0].root, rows[0].note) if rows else None

    def get_checkpoint(self, log_id: str, size: int) -> Checkpoint:
        rows = self.database.rows(sa.select(db.checkpoints).where(db.checkpoints.c.log_id == log_id, db.checkpoints.c.size == size),
                                  replica=True)
        if not rows:
            raise NotFoundError(f"no checkpoint of size {size}", where=f"log {log_id!r}")
        return Checkpoint(self.log_info(log_id).origin, rows[0].size, rows[0].root, rows[0].note)

    def list_checkpoints(self, log_id: str, *, after: int = -1, limit: int = 1000) -> list[Checkpoint]:
        origin = self.log_info(log_id).origin
        rows = self.database.rows(
            sa.select(db.checkpoints)
            .where(db.checkpoints.c.log_id == log_id, db.checkpoints.c.size > after)
            .order_by(db.checkpoints.c.size)
            .limit(limit),
            replica=True)
        return [Checkpoint(origin, r.size, r.root, r.note) for r in rows]

    # --- entries --------------------------------------------------------------------------

    def get_entry(self, log_id: str, index: int) -> EntryRecord:
        rows = self.database.rows(sa.select(db.entries).where(db.entries.c.log_id == log_id, db.entries.c.idx == index),
                                  replica=True)
        if not rows:
            raise NotFoundError(f"no entry at index {index}", where=f"log {log_id!r}")
        return EntryRecord.of(rows[0])

    def find_event(self, log_id: str, event_id: str) -> EntryRecord:
        try:
            key = db.event_key(event_id)
        except ValueError:
            raise NotFoundError(f"no event with id {event_id[:80]} (an event id is 64 hex digits)", where=f"log {log_id!r}") from None
        e = db.entries.c
        rows = self.database.rows(sa.select(db.entries).where(e.log_id == log_id, e.event_key == key, e.event_id == event_id),
                                  replica=True)
        if not rows:
            raise NotFoundError(f"no event with id {event_id}", where=f"log {log_id!r}")
        return EntryRecord.of(rows[0])

    def iter_entries(
        self, log_id: str, start: int = 0, end: int | None = None, *, run_id: str | None = None, page: int = 5000
    ) -> Iterator[EntryRecord]:
        """Entries in index order, read page by page (memory does not grow with the log)."""
        e = db.entries.c
        pos = start
        while True:
            q = sa.select(db.entries).where(e.log_id == log_id, e.idx >= pos)
            if end is not None:
                q = q.where(e.idx < end)
            if run_id is not None:
                q = q.where(e.run_id == run_id)
            rows = self.database.rows(q.order_by(e.idx).limit(page), replica=True)
            yield from (EntryRecord.of(r) for r in rows)
            # From a replica a short page may only mean "not replayed yet": the next read
            # (empty there) goes to the primary.
            if len(rows) < page and (self.database.replica is None or not rows):
                return
            pos = rows[-1].idx + 1

    def iter_leaf_hashes(self, log_id: str, start: int, end: int, page: int = 20000) -> Iterator[tuple[int, bytes]]:
        e = db.entries.c
        pos = start
        while pos < end:
            rows = self.database.rows(
                sa.select(e.idx, e.leaf_hash).where(e.log_id == log_id, e.idx >= pos, e.idx < end).order_by(e.idx).limit(page),
                replica=True)
            if not rows:
                return
            for r in rows:
                yield int(r.idx), bytes(r.leaf_hash)
            pos = rows[-1].idx + 1

    def entry_span(self, log_id: str, *, start: int = 0, end: int | None = None, run_id: str | None = None) -> EntrySpan:
        """Count, first and last index of the entries in [start, end) (of `run_id` if given),
        from the primary in one statement: a replica's count could be a prefix's."""
        e = db.entries.c
        cond = sa.and_(e.log_id == log_id, e.idx >= start)
        if end is not None:
            cond = sa.and_(cond, e.idx < end)
        if run_id is not None:
            cond = sa.and_(cond, e.run_id == run_id)
        [(count, first, last)] = self.database.rows(sa.select(sa.func.count(), sa.func.min(e.idx), sa.func.max(e.idx)).where(cond))
        return EntrySpan(int(count), None if first is None else int(first), None if last is None else int(last))

    def has_run(self, log_id: str, run_id: str) -> bool:
        """Whether the log holds an event of the run (on the primary)."""
        e = db.entries.c
        return bool(self.database.rows(sa.select(e.idx).where(e.log_id == log_id, e.run_id == run_id).limit(1)))

    def sealed_payloads(self, log_id: str, start: int, end: int) -> list[SealedPayload]:
        """The stored payload rows of entries [start, end), by index (what a manifest publishes as
        references, docs/manifest-format.md), read from the primary in one statement."""
        p = db.payloads.c
        rows = self.database.rows(sa.select(p.idx, p.nonce, p.ciphertext)
                                  .where(p.log_id == log_id, p.idx >= start, p.idx < end).order_by(p.idx))
        return [SealedPayload(int(r.idx), bytes(r.nonce), bytes(r.ciphertext)) for r in rows]

    def tlog_proof(self, log_id: str, index: int, size: int | None = None) -> str:
        """The entry's inclusion proof as a c2sp.org/tlog-proof@v1 file (docs/checkpoint-format.md)."""
        n, proof = self.inclusion_proof(log_id, index, size)
        cp = self.get_checkpoint(log_id, n)
        entry = self.get_entry(log_id, index).entry
        lines = ["c2sp.org/tlog-proof@v1", "extra " + base64.b64encode(entry).decode(), f"index {index}"]
        lines += [base64.b64encode(h).decode() for h in proof]
        return "\n".join(lines) + "\n\n" + cp.note

    def producers(self, log_id: str) -> list[dict]:
        rows = self.database.rows(sa.select(db.producers).where(db.producers.c.log_id == log_id)
                                  .order_by(db.producers.c.registered_at), replica=True)
        return [
            {
                "key_id": r.key_id,
                "public_key": base64.b64encode(r.public_key).decode(),
                "label": r.label,
                "status": r.status,
                "registered_at": r.registered_at,
                "revoked_at": r.revoked_at,
                "registered_idx": r.registered_idx,
                "revoked_idx": r.revoked_idx,
            }
            for r in rows
        ]
