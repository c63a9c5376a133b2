"""The anchors repository of the storage gateway (`ledger.anchors`): the `anchors` table the
anchoring worker writes (docs/anchoring.md) and the API, the CLI, the metrics and bundle export
read. Every read runs on the primary's read engine: never behind the write lock on SQLite, and
never from a replica (a lagging replica would show an anchor's earlier status)."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, fields
from typing import Any

import sqlalchemy as sa

from rlhf_ledger.core.anchor_status import SETTLED, AnchorStatus
from rlhf_ledger.core.errors import LedgerError
from rlhf_ledger.core.redact import redact_secrets
from rlhf_ledger.store import db
from rlhf_ledger.store.database import Database

log = logging.getLogger(__name__)


class RetryRefused(LedgerError):
    code = "anchor_retry_refused"


@dataclass(frozen=True)
class AnchorRecord:
    """One anchoring record: a checkpoint's way onto the chain (columns of `anchors`)."""

    id: int
    log_id: str
    checkpoint_size: int
    prev_size: int
    status: AnchorStatus
    cid: str | None
    chain_id: int | None
    contract: str | None  # as recorded by the worker (EIP-55 checksummed)
    tx_hash: str | None
    nonce: int | None
    block_number: int | None
    block_hash: str | None
    block_timestamp: int | None
    log_index: int | None
    gas_used: int | None
    evidence_json: str | None  # the anchor evidence (docs/bundle-format.md) as stored
    error: str | None
    attempts: int
    created_at: float
    updated_at: float

    @classmethod
    def of(cls, row: Any) -> AnchorRecord:
        m = dict(row._mapping)
        m["status"] = AnchorStatus(m["status"])
        m["evidence_json"] = m.pop("evidence")
        return cls(**m)

    @property
    def evidence(self) -> dict[str, Any] | None:
        """The evidence document (parsed; a stored value that is not JSON raises ValueError)."""
        return None if self.evidence_json is None else json.loads(self.evidence_json)

    def as_json(self) -> dict[str, Any]:
        """Every column, `evidence` parsed (`rlhf-ledger anchors --json`)."""
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "evidence_json"}
        out["status"] = str(self.status)
        out["evidence"] = self.evidence
        return out


# Columns a caller may set (id is assigned; created_at/updated_at are the repository's).
_SETTABLE = {f.name for f in fields(AnchorRecord)} - {"id", "evidence_json", "created_at", "updated_at"} | {"evidence"}


class AnchorStore:
    """Typed reads and writes of anchor records (`ledger.anchors`)."""

    def __init__(self, database: Database):
        self.database = database

    def _rows(self, q: Any) -> list[AnchorRecord]:
        return [AnchorRecord.of(r) for r in self.database.rows(q)]

    # --- reads --------------------------------------------------------------------------------

    def for_log(self, log_id: str, *, statuses: Iterable[AnchorStatus] | None = None) -> list[AnchorRecord]:
        """Every anchor record of the log (oldest first), optionally only those in `statuses`."""
        a = db.anchors.c
        q = sa.select(db.anchors).where(a.log_id == log_id)
        if statuses is not None:
            q = q.where(a.status.in_([str(s) for s in statuses]))
        return self._rows(q.order_by(a.id))

    def get(self, log_id: str, anchor_id: int) -> AnchorRecord | None:
        a = db.anchors.c
        found = self._rows(sa.select(db.anchors).where(a.log_id == log_id, a.id == anchor_id))
        return found[0] if found else None

    def page(self, log_id: str, *, after_id: int = 0, status: AnchorStatus | None = None, limit: int = 100) -> list[AnchorRecord]:
        """Records with id > after_id (optionally of one status), oldest first, at most `limit`."""
        a = db.anchors.c
        q = sa.select(db.anchors).where(a.log_id == log_id, a.id > after_id)
        if status is not None:
            q = q.where(a.status == str(status))
        return self._rows(q.order_by(a.id).limit(limit))

    def latest_settled(self, log_id: str) -> AnchorRecord | None:
        """The settled (confirmed or finalized) anchor of the largest checkpoint, or None."""
        a = db.anchors.c
        found = self._rows(sa.select(db.anchors).where(a.log_id == log_id, a.status.in_([str(s) for s in SETTLED]))
                           .order_by(a.checkpoint_size.desc(), a.id.desc()).limit(1))
        return found[0] if found else None

    def covering(self, log_id: str, index: int) -> list[AnchorRecord]:
        """Records of checkpoints that cover entry `index` (size > index), by size then id."""
        a = db.anchors.c
        return self._rows(sa.select(db.anchors).where(a.log_id == log_id, a.checkpoint_size > index)
                          .order_by(a.checkpoint_size, a.id))

    def settled_by_size(self, log_id: str) -> dict[int, AnchorRecord]:
        """Settled anchors by checkpoint size, the newest record per size (what a proof bundle may
        cite: the `SettledAnchors` interface of rlhf_ledger.export)."""
        return {r.checkpoint_size: r for r in self.for_log(log_id, statuses=SETTLED)}

    def settled_for_checkpoint(self, log_id: str, size: int) -> AnchorRecord | None:
        """The settled anchor of checkpoint `size` (the newest record), or None."""
        return self.settled_by_size(log_id).get(size)

    # --- writes (the anchoring worker, an operator's retry) -----------------------------------

    @staticmethod
    def _values(values: dict[str, Any]) -> dict[str, Any]:
        unknown = set(values) - _SETTABLE
        if unknown:
            raise ValueError(f"not an anchor column: {', '.join(sorted(unknown))}")
        out = dict(values)
        if "status" in out:
            out["status"] = str(AnchorStatus(out["status"]))
        if isinstance(out.get("evidence"), dict):
            out["evidence"] = json.dumps(out["evidence"], sort_keys=True)
        if out.get("error"):  # node errors quote the RPC URL, which may carry a credential
            out["error"] = redact_secrets(out["error"])
        return out

    def insert(self, log_id: str, **values: Any) -> AnchorRecord:
        """A new record (status, checkpoint_size and prev_size required); attempts start at 0."""
        now = time.time()
        row = {"attempts": 0, **self._values(values), "log_id": log_id, "created_at": now, "updated_at": now}
        with self.database.write() as conn:
            anchor_id = conn.execute(db.anchors.insert().values(**row)).inserted_primary_key[0]
        found = self.get(log_id, int(anchor_id))
        assert found is not None
        return found

    def update(self, record: AnchorRecord, **values: Any) -> AnchorRecord:
        """Set columns of a record; returns it as now stored."""
        row = {**self._values(values), "updated_at": time.time()}
        with self.database.write() as conn:
            conn.execute(db.anchors.update().where(db.anchors.c.id == record.id).values(**row))
        found = self.get(record.log_id, record.id)
        assert found is not None
        return found

    def retry(self, log_id: str, anchor_id: int) -> AnchorRecord:
        """An operator's deliberate retry of one failed record (`rlhf-ledger anchors --retry ID`).

        A record whose transaction is recorded goes back to `submitted` (the worker looks the
        receipt up and builds the evidence again); one without goes back to `pending` (signed and
        sent again; the contract refuses a size that no longer grows). Attempts restart at 0.
        Only `failed` records."""
        a = db.anchors.c
        with self.database.write() as conn:
            row = conn.execute(sa.select(db.anchors).where(a.log_id == log_id, a.id == anchor_id)).first()
            if row is None:
                raise RetryRefused(f"no anchor {anchor_id} in log {log_id}", where="anchors")
            if row.status != AnchorStatus.FAILED:
                raise RetryRefused(f"anchor {anchor_id} is {row.status}, only failed anchors can be retried",
                                   where="anchors")
            status = AnchorStatus.SUBMITTED if row.tx_hash else AnchorStatus.PENDING
            conn.execute(db.anchors.update().where(a.id == anchor_id, a.status == str(AnchorStatus.FAILED)).values(
                status=str(status), attempts=0, updated_at=time.time(),
                error=f"retry requested by operator (was: {row.error})"[:2000]))
        log.info("anchoring %s: anchor %d (checkpoint %d) retried by operator: failed -> %s", log_id, anchor_id,
                 row.checkpoint_size, status)
        found = self.get(log_id, anchor_id)
        assert found is not None
        return found

    # --- gauges -------------------------------------------------------------------------------

    def counts_by_status(self) -> list[tuple[str, AnchorStatus, int]]:
        """(log id, status, number of records) of every log."""
        a = db.anchors.c
        rows = self.database.rows(sa.select(a.log_id, a.status, sa.func.count()).group_by(a.log_id, a.status))
        return [(r[0], AnchorStatus(r[1]), int(r[2])) for r in rows]
