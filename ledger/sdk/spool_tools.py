"""Inspect and deliver spools without the Run that wrote them (``rlhf-ledger spool status|flush``).

A crashed training job leaves its spool: the journal lines not yet acknowledged. Delivering them
needs only the spool (its meta.json names the log, run and producer), the producer's key (the
lines are unsigned; signing is deterministic, so the envelopes are the ones the job would have
sent) and a sink. Status reads the files without taking the lock or changing anything.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from rlhf_ledger.core.keys import Signer
from rlhf_ledger.sdk.sender import Sender
from rlhf_ledger.sdk.sinks import Sink
from rlhf_ledger.sdk.spool import _SEG_RE, Journal, SpoolError, lock_holder, read_meta, valid_prefix


def find_spools(root: str | os.PathLike) -> list[Path]:
    """``root`` itself if it is a spool, else every spool below it (sorted)."""
    root = Path(root)
    if not root.is_dir():
        raise SpoolError("no such directory", where=str(root))
    if (root / "meta.json").exists():
        return [root]
    return sorted(p.parent for p in root.rglob("meta.json"))


@dataclass(frozen=True)
class SpoolStatus:
    path: Path
    log_id: str
    run_id: str
    producer: str
    acked_seq: int  # -1: nothing acknowledged
    pending: int  # journal records after the last acknowledged one
    last_seq: int
    started: bool  # run.start recorded (acknowledged or pending)
    ended: bool  # run.end recorded
    dead_letters: int
    last_error: str | None
    locked_by: int | None  # pid of the process that has it open

    def as_json(self) -> dict:
        d = {k: getattr(self, k) for k in self.__dataclass_fields__}
        d["path"] = str(self.path)
        return d


def _records(path: Path) -> Iterator[dict]:
    for _, seg in sorted((int(m.group(1)), p) for p in path.iterdir() if (m := _SEG_RE.match(p.name))):
        for raw in valid_prefix(seg.read_bytes()).split(b"\n"):  # an open segment ends in reserved NULs
            if raw.strip():
                try:
                    yield json.loads(raw)
                except ValueError:
                    return  # a torn final line (power loss): recovery drops it


def status(path: str | os.PathLike) -> SpoolStatus:
    path = Path(path)
    meta = read_meta(path)
    acked, types = -1, set()
    ap = path / "acked.json"
    if ap.exists():
        try:
            doc = json.loads(ap.read_text())
            acked, types = int(doc["seq"]), set(doc.get("types", []))
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise SpoolError(f"unreadable acknowledgement state: {e}", where=str(ap)) from None
    pending, last = 0, acked
    for rec in _records(path):
        types.add(rec.get("type"))
        last = max(last, int(rec.get("seq", -1)))
        if int(rec.get("seq", -1)) > acked:
            pending += 1
    dead, last_error = 0, None
    dp = path / "deadletter.jsonl"
    if dp.exists():
        for line in dp.read_text().splitlines():
            if line.strip():
                dead += 1
                try:
                    err = json.loads(line)["error"]
                    last_error = f"{err.get('code')}: {err.get('message')}"
                except (ValueError, KeyError, TypeError):
                    last_error = line[:200]
    return SpoolStatus(path, meta["log_id"], meta["run_id"], meta["producer"], acked, pending, last,
                       "run.start" in types, "run.end" in types, dead, last_error, lock_holder(path))


def flush(path: str | os.PathLike, signer: Signer, sink: Sink, *, timeout: float | None = 60.0) -> int:
    """Deliver what the spool holds; return the number of events delivered. Raises the delivery
    error (or TimeoutError) when it could not; the spool then still holds them."""
    path = Path(path)
    meta = read_meta(path)
    if meta["producer"] != signer.key_id:
        raise SpoolError(f"spool is for producer {meta['producer'][:16]}..., the key given is {signer.key_id[:16]}...",
                         where=str(path))
    sink_log = getattr(sink, "log_id", None)
    if sink_log is not None and sink_log != meta["log_id"]:
        raise SpoolError(f"spool is for log {meta['log_id']!r}, the destination is log {sink_log!r}", where=str(path))
    journal = Journal(path, log_id=meta["log_id"], run_id=meta["run_id"], producer=meta["producer"])
    sender = Sender(journal, signer, sink, log_id=meta["log_id"], run_id=meta["run_id"], backoff_max=5.0)
    before = sender.acked_seq
    try:
        sender.flush(timeout)
    finally:
        sender.close(timeout=0)
    return sender.acked_seq - before
