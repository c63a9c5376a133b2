"""The run index (docs/run-index.md): the log's signed statement of each run's membership.

For a tree size N, every run with entries below N has a record (event count, Merkle root over
its leaf hashes in index order, each producer's last seq and event id, ended); the records,
sorted by run id, are the leaves of an RFC 9162 tree whose root the log key signs in a
run-index note. Records are computed from stored entries incrementally: `run_records` keeps
each run's record and the compact range of its leaves as of the sizes at which the index was
computed, and a new size extends them with the entries in between.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from . import db, merkle
from .checkpoints import SIG_PREFIX, note_key_id
from .errors import LedgerError, ProofError
from .jcs import canonicalize
from .keys import Signer, verify

NOTE_TAG = "rlhf-ledger.run-index/v1"
RECORD_KEYS = frozenset({"run_id", "events", "root", "producers", "ended"})


@dataclass(frozen=True)
class RunIndex:
    size: int
    count: int
    root: bytes
    note: str


def _b64(h: bytes) -> str:
    return base64.b64encode(h).decode("ascii")


def record_leaf(record: dict) -> bytes:
    return merkle.leaf_hash(canonicalize(record))


def _sort_key(run_id: str) -> bytes:
    return run_id.encode("utf-8")


# -- the run-index note -----------------------------------------------------------------------

def note_body(origin: str, size: int, count: int, root: bytes) -> str:
    return f"{NOTE_TAG}\n{origin}\n{size}\n{count}\n{_b64(root)}\n"


def sign_note(origin: str, size: int, count: int, root: bytes, signer: Signer) -> str:
    body = note_body(origin, size, count, root)
    sig = signer.sign(body.encode("utf-8"))
    line = _b64(note_key_id(origin, signer.public_key) + sig)
    return f"{body}\n{SIG_PREFIX}{origin} {line}\n"


def parse_and_verify_note(note: str, origin: str, public_key: bytes) -> RunIndex:
    """A run-index note of `origin` signed by the log key (ProofError otherwise)."""
    body, sep, sigs = note.partition("\n\n")
    if not sep or not sigs.endswith("\n"):
        raise ProofError("run-index note has no signature block")
    body += "\n"
    lines = body.split("\n")[:-1]
    if len(lines) != 5 or lines[0] != NOTE_TAG:
        raise ProofError(f"run-index note body must be five lines starting with {NOTE_TAG}")
    if lines[1] != origin:
        raise ProofError(f"run-index note origin {lines[1]!r} is not {origin!r}")
    nums = []
    for text, what in ((lines[2], "size"), (lines[3], "run count")):
        if not text.isdigit() or not text.isascii() or (text != "0" and text.startswith("0")):
            raise ProofError(f"run-index note {what} is not a decimal without leading zeros")
        nums.append(int(text))
    try:
        root = base64.b64decode(lines[4], validate=True)
    except ValueError:
        raise ProofError("run-index note root is not base64") from None
    if len(root) != 32:
        raise ProofError("run-index note root is not 32 bytes")
    want = note_key_id(origin, public_key)
    for line in sigs[:-1].split("\n"):
        if not line.startswith(SIG_PREFIX):
            raise ProofError("malformed signature line in run-index note")
        name, _, sig_b64 = line[len(SIG_PREFIX):].partition(" ")
        try:
            raw = base64.b64decode(sig_b64, validate=True)
        except ValueError:
            raise ProofError("signature line is not base64") from None
        if name == origin and raw[:4] == want and len(raw) == 68:
            if verify(public_key, body.encode("utf-8"), raw[4:]):
                return RunIndex(nums[0], nums[1], root, note)
            raise ProofError("log signature on the run-index note does not verify")
    raise ProofError("run-index note carries no signature by the log key")


# -- computing records from storage -------------------------------------------------------------

class _RunState:
    __slots__ = ("events", "frontier", "producers", "ended")

    def __init__(self, events: int = 0, frontier: list | None = None, producers: dict | None = None,
                 ended: bool = False):
        self.events = events
        self.frontier: list[tuple[int, bytes]] = frontier or []
        self.producers: dict[str, tuple[int, str]] = producers or {}
        self.ended = ended

    @classmethod
    def load(cls, record_text: str, frontier_text: str) -> "_RunState":
        rec = json.loads(record_text)
        fr = [(int(s), base64.b64decode(h)) for s, h in json.loads(frontier_text)]
        prods = {p["key_id"]: (int(p["seq"]), p["event_hash"]) for p in rec["producers"]}
        return cls(int(rec["events"]), fr, prods, bool(rec["ended"]))

    def record(self, run_id: str) -> dict:
        return {
            "run_id": run_id,
            "events": self.events,
            "root": _b64(merkle.compact_root(self.frontier)),
            "producers": [{"key_id": k, "seq": s, "event_hash": h} for k, (s, h) in sorted(self.producers.items())],
            "ended": self.ended,
        }

    def frontier_json(self) -> str:
        return json.dumps([[s, _b64(h)] for s, h in self.frontier], separators=(",", ":"))


def records_from_entries(entries: Iterable[tuple[str, str, int, str, str, bytes]]) -> list[tuple[str, dict]]:
    """Run records of (run_id, producer, seq, event_id, type, leaf_hash) entries in index order,
    sorted by run id: the pure form of what storage computes incrementally."""
    states: dict[str, _RunState] = {}
    for run_id, producer, seq, event_id, typ, leaf in entries:
        st = states.setdefault(run_id, _RunState())
        st.events += 1
        merkle.compact_push(st.frontier, leaf)
        st.producers[producer] = (seq, event_id)
        st.ended = st.ended or typ == "run.end"
    return sorted(((r, st.record(r)) for r, st in states.items()), key=lambda x: _sort_key(x[0]))


def sign_index(origin: str, size: int, records: Sequence[tuple[str, dict]], signer: Signer) -> tuple[RunIndex, merkle.InMemoryTree]:
    """The signed run index over sorted records, and its tree (for inclusion proofs)."""
    tree = merkle.InMemoryTree()
    tree.extend_leaf_hashes([record_leaf(rec) for _, rec in records])
    root = tree.root()
    return RunIndex(size, tree.size, root, sign_note(origin, size, tree.size, root, signer)), tree


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


def run_index(ledger, log_id: str, size: int) -> RunIndex:  # noqa: ANN001 - a ledger.store.Ledger
    """The signed run index at tree size `size` (computed and stored on first use)."""
    if size <= 0:
        raise LedgerError("the run index of an empty tree is not signed", where=f"log {log_id!r}")
    ri = db.run_indexes.c
    q = sa.select(db.run_indexes).where(ri.log_id == log_id, ri.size == size)
    with ledger.read_engine.connect() as conn:  # the usual case: signed already, no write lock
        row = conn.execute(q).first()
        conn.rollback()
    if row is not None:
        return RunIndex(size, int(row.count), bytes(row.root), row.note)
    with ledger.engine.begin() as conn:
        row = conn.execute(q).first()  # another process may have signed it meanwhile
        if row is not None:
            return RunIndex(size, int(row.count), bytes(row.root), row.note)
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


def run_membership(ledger, log_id: str, run_id: str, size: int) -> tuple[RunIndex, dict, int, list[bytes]]:  # noqa: ANN001
    """(signed index at `size`, the run's record, its position, its inclusion proof)."""
    idx = run_index(ledger, log_id, size)
    with ledger.read_engine.connect() as conn:
        leaves = _leaves(conn, log_id, size)
        rec = _latest_records(conn, log_id, size, [run_id]).get(run_id)
        conn.rollback()
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


def record_digest(record: dict) -> str:
    """Short hex digest of a record, for messages."""
    return hashlib.sha256(canonicalize(record)).hexdigest()[:16]
