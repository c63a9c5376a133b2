"""Completeness of a run bundle, written from docs/run-index.md (not from the ledger's code).

The bundle's `run` record carries the log's signed run-index note for the bundle's final
checkpoint, the run's record and its inclusion proof in the index. The run's events in the
bundle are folded here (count, compact range of their leaf hashes, each producer's last seq and
event id, run.end seen) and must rebuild the record exactly: then the bundle holds every event
the log had for the run at that size.
"""

from __future__ import annotations

import re
from typing import Any, TypedDict, cast

from .jcs import JCSError, canonicalize
from .jsontypes import JSONObject
from .merkle import CompactRange, ProofError, leaf_hash, verify_inclusion
from .note import NoteError, VerifierKey, b64decode_strict, verify_note

NOTE_TAG = "rlhf-ledger.run-index/v1"
RECORD_KEYS = {"run_id", "events", "root", "producers", "ended"}
_DECIMAL = re.compile(r"(0|[1-9][0-9]{0,18})")
_HEX64 = re.compile(r"[0-9a-f]{64}")
MAX_PROOF = 64


class CompletenessError(ValueError):
    pass


class ProducerHead(TypedDict):
    """A producer's last event in the run (docs/run-index.md)."""
    key_id: str  # 64 hex
    seq: int
    event_hash: str  # 64 hex


class RunIndexRecord(TypedDict):
    """A run's record in the log's run index (docs/run-index.md), as _check_record admits it."""
    run_id: str
    events: int
    root: str  # base64 of the compact range root of the run's leaves
    producers: list[ProducerHead]  # ascending key_id
    ended: bool


def parse_run_index_note(text: Any, trusted: list[VerifierKey], origin: str) -> tuple[int, int, bytes]:
    """(tree size, run count, root) of a run-index note signed by a trusted log key."""
    if not isinstance(text, str):
        raise CompletenessError("note must be the run-index note text")
    try:
        body, key = verify_note(text, trusted)
    except NoteError as e:
        raise CompletenessError(f"run-index note: {e}") from None
    lines = body.split("\n")
    if len(lines) != 6 or lines[-1] != "" or lines[0] != NOTE_TAG:
        raise CompletenessError(f"run-index note body must be five lines starting with {NOTE_TAG}")
    if lines[1] != origin or key.name != origin:
        raise CompletenessError(f"run-index note origin {lines[1][:60]!r} is not the log's {origin[:60]!r}")
    if not _DECIMAL.fullmatch(lines[2]) or not _DECIMAL.fullmatch(lines[3]):
        raise CompletenessError("run-index note size and run count must be decimals without leading zeros")
    try:
        root = b64decode_strict(lines[4], "run-index root", 32)
    except NoteError as e:
        raise CompletenessError(str(e)) from None
    return int(lines[2]), int(lines[3]), root


def _check_record(rec: Any) -> RunIndexRecord:
    if not isinstance(rec, dict) or set(rec) != RECORD_KEYS:
        raise CompletenessError(f"record must have exactly the members {sorted(RECORD_KEYS)}")
    if type(rec["run_id"]) is not str or type(rec["events"]) is not int or rec["events"] < 1:
        raise CompletenessError("record run_id must be a string and events a positive integer")
    if type(rec["ended"]) is not bool:
        raise CompletenessError("record ended must be true or false")
    try:
        b64decode_strict(rec["root"], "record root", 32)
    except NoteError as e:
        raise CompletenessError(str(e)) from None
    prods = rec["producers"]
    if not isinstance(prods, list) or not prods:
        raise CompletenessError("record producers must be a non-empty list")
    last = ""
    for i, p in enumerate(prods):
        if (not isinstance(p, dict) or set(p) != {"key_id", "seq", "event_hash"} or type(p["key_id"]) is not str
                or not _HEX64.fullmatch(p["key_id"]) or type(p["seq"]) is not int or p["seq"] < 0
                or type(p["event_hash"]) is not str or not _HEX64.fullmatch(p["event_hash"])):
            raise CompletenessError(f"record producers[{i}] must be {{key_id, seq, event_hash}} (64 hex, int >= 0, 64 hex)")
        if p["key_id"] <= last:
            raise CompletenessError("record producers must be in strictly ascending key_id order")
        last = p["key_id"]
    return cast(RunIndexRecord, rec)  # every member checked above


class RunCompleteness:
    """The run record's claim, checked when the record is read; the run's events, folded."""

    def __init__(self) -> None:
        self.size: int | None = None  # the run index's tree size, once a record verified
        self.note: str | None = None
        self.record: RunIndexRecord | None = None
        self.seen_record = False
        self.events = 0
        self.range = CompactRange()
        self.heads: dict[str, tuple[int, bytes]] = {}  # producer -> (last seq, raw event id): per producer of one run
        self.ended = False

    def read_record(self, obj: JSONObject, trusted: list[VerifierKey], origin: str, run_id: str) -> None:
        """Check the `run` record; raises CompletenessError naming what failed."""
        if self.seen_record:
            raise CompletenessError("more than one run record")
        self.seen_record = True
        if set(obj) != {"kind", "checkpoint_size", "note", "record", "index", "proof"}:
            raise CompletenessError("a run record is exactly {kind, checkpoint_size, note, record, index, proof}")
        size, count, root = parse_run_index_note(obj["note"], trusted, origin)
        if obj["checkpoint_size"] != size or type(obj["checkpoint_size"]) is not int:
            raise CompletenessError(f"checkpoint_size differs from the note's size {size}")
        rec = _check_record(obj["record"])
        if rec["run_id"] != run_id:
            raise CompletenessError(f"record is for run {rec['run_id'][:40]!r}, the scope is run {run_id[:40]!r}")
        index, proof = obj["index"], obj["proof"]
        if type(index) is not int or not 0 <= index < count:
            raise CompletenessError(f"index must be an integer below the run count {count}")
        if not isinstance(proof, list) or len(proof) > MAX_PROOF:
            raise CompletenessError("proof must be a list of base64 hashes")
        try:
            hashes = [b64decode_strict(h, "proof hash", 32) for h in proof]
            verify_inclusion(index, count, leaf_hash(canonicalize(rec)), hashes, root)
        except (NoteError, ProofError, JCSError) as e:
            raise CompletenessError(f"record is not in the signed run index: {e}") from None
        self.size, self.note, self.record = size, obj["note"], rec

    def feed(self, index: int, leaf: bytes, producer: str, seq: int, event_id: bytes, typ: str) -> None:
        """One event of the scope's run, in index order."""
        if self.size is not None and index >= self.size:
            return  # beyond the size the record speaks for
        self.events += 1
        self.range.append(leaf)
        self.heads[producer] = (seq, event_id)
        if typ == "run.end":
            self.ended = True

    def differences(self) -> list[str]:
        """What the bundle's events do not share with the record (empty: complete)."""
        rec = self.record
        assert rec is not None
        out = []
        if self.events != rec["events"]:
            out.append(f"the log has {rec['events']} events of this run below size {self.size}, the bundle holds {self.events}")
        elif self.range.root() != b64decode_strict(rec["root"], "record root", 32):
            out.append("the run's leaves in the bundle are not the leaves the log recorded for it (root differs)")
        want = {p["key_id"]: (p["seq"], bytes.fromhex(p["event_hash"])) for p in rec["producers"]}
        missing = sorted(set(want) - set(self.heads))
        extra = sorted(set(self.heads) - set(want))
        if missing:
            out.append(f"producer(s) {', '.join(k[:16] for k in missing)} wrote events of this run that the bundle omits")
        if extra:
            out.append(f"producer(s) {', '.join(k[:16] for k in extra)} are not producers of this run in the log")
        for k in sorted(set(want) & set(self.heads)):
            if want[k] != self.heads[k]:
                out.append(f"producer {k[:16]}'s last event is seq {want[k][0]} in the log, seq {self.heads[k][0]} in the bundle")
        if rec["ended"] != self.ended:
            out.append("the log records a run.end for this run that the bundle omits" if rec["ended"]
                       else "the bundle shows a run.end the log's record does not")
        return out
