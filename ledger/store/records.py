"""Typed records the storage gateway returns (never SQLAlchemy rows): a log, an appended
event's position, a stored entry, a span of entries, a sealed payload row."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

from rlhf_ledger.core.checkpoints import vkey
from rlhf_ledger.core.keys import key_id


@dataclass(frozen=True)
class AppendResult:
    index: int
    event_id: str
    leaf_hash: bytes
    duplicate: bool

    def as_json(self) -> dict:
        return {
            "index": self.index,
            "event_id": self.event_id,
            "leaf_hash": base64.b64encode(self.leaf_hash).decode(),
            "duplicate": self.duplicate,
        }


@dataclass(frozen=True)
class LogInfo:
    log_id: str
    origin: str
    public_key: bytes
    size: int
    checkpoint_every_events: int
    checkpoint_every_seconds: float

    @property
    def vkey(self) -> str:
        return vkey(self.origin, self.public_key)

    @property
    def key_id(self) -> str:
        """The log key's id: the `producer` of the log's own records (docs/keys.md)."""
        return key_id(self.public_key)


def _bytes(v: Any) -> Any:
    # Drivers return memoryview (PostgreSQL) or bytes (SQLite) for binary columns. A value of
    # another type (text written into the column by tampering) is kept as is, so that `audit`
    # can report it instead of a conversion hiding it.
    return bytes(v) if isinstance(v, (bytearray, memoryview)) else v


@dataclass(frozen=True)
class EntryRecord:
    """One stored log entry (table `entries`, docs/storage.md)."""

    log_id: str
    idx: int
    event_id: str
    event_key: int
    leaf_hash: bytes
    entry: bytes  # the JCS envelope, exactly as stored (what leaf_hash hashes)
    run_id: str
    producer: str
    seq: int
    type: str
    ts: str
    appended_at: float

    @classmethod
    def of(cls, row: Any) -> EntryRecord:
        return cls(row.log_id, int(row.idx), row.event_id, int(row.event_key), _bytes(row.leaf_hash), _bytes(row.entry),
                   row.run_id, row.producer, int(row.seq), row.type, row.ts, float(row.appended_at))


@dataclass(frozen=True)
class EntrySpan:
    """How many entries a selection holds and its first and last index (None when empty)."""

    count: int
    first: int | None
    last: int | None


@dataclass(frozen=True)
class SealedPayload:
    """A stored payload row as published in manifests: the entry's index, nonce and ciphertext."""

    idx: int
    nonce: bytes
    ciphertext: bytes
