"""The run index's records and notes (docs/run-index.md), with no storage: what a record holds,
how the index is hashed and signed, and how a run-index note is read.

For a tree size N, every run with entries below N has a record (event count, Merkle root over
its leaf hashes in index order, each producer's last seq and event id, ended); the records,
sorted by run id, are the leaves of an RFC 9162 tree whose root the log key signs in a
run-index note. rlhf_ledger.store.run_index computes them from stored entries.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from rlhf_ledger.core import merkle
from rlhf_ledger.core.checkpoints import SIG_PREFIX, note_key_id
from rlhf_ledger.core.errors import ProofError
from rlhf_ledger.core.jcs import canonicalize
from rlhf_ledger.core.keys import Signer, verify

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


class _RunState:
    __slots__ = ("events", "frontier", "producers", "ended")

    def __init__(self, events: int = 0, frontier: list | None = None, producers: dict | None = None,
                 ended: bool = False):
        self.events = events
        self.frontier: list[tuple[int, bytes]] = frontier or []
        self.producers: dict[str, tuple[int, str]] = producers or {}
        self.ended = ended

    @classmethod
    def load(cls, record_text: str, frontier_text: str) -> _RunState:
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
