"""The runs of a log with their status, from the stored entries (``rlhf-ledger runs``,
``GET /v1/logs/{log_id}/runs``). A run is ``open`` until its ``run.end`` (then the ledger
refuses later events of it), and names its run.end status when ended."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from rlhf_ledger.store import db


@dataclass(frozen=True)
class RunSummary:
    run_id: str
    status: str  # "open" or "ended"
    end_status: str | None  # run.end's status: completed / failed / aborted
    started: bool  # a run.start is in the log
    events: int
    producers: int
    first_index: int
    last_index: int
    first_ts: str
    last_ts: str
    payloads_erased: bool

    def as_json(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def list_runs(ledger: Any, log_id: str, *, limit: int = 1000, after: str | None = None) -> list[RunSummary]:
    """Runs ordered by run id (``after`` pages on); ``ledger`` is a ledger.store.Ledger."""
    ledger.log_info(log_id)  # NotFoundError for an unknown log
    e = db.entries
    q = (sa.select(e.c.run_id, sa.func.count(), sa.func.count(sa.distinct(e.c.producer)), sa.func.min(e.c.idx),
                   sa.func.max(e.c.idx), sa.func.min(e.c.ts), sa.func.max(e.c.ts))
         .where(e.c.log_id == log_id).group_by(e.c.run_id).order_by(e.c.run_id).limit(limit))
    if after is not None:
        q = q.where(e.c.run_id > after)
    rows = ledger.database.rows(q, replica=True)
    if not rows:
        return []
    ids = [r[0] for r in rows]
    marks = ledger.database.rows(sa.select(e.c.run_id, e.c.type, e.c.entry).where(
        e.c.log_id == log_id, e.c.run_id.in_(ids), e.c.type.in_(("run.start", "run.end"))), replica=True)
    started, ended = set(), {}
    for run_id, typ, entry in marks:
        if typ == "run.start":
            started.add(run_id)
        elif run_id not in ended:
            try:
                ended[run_id] = json.loads(entry)["event"]["body"].get("status")
            except (ValueError, KeyError, TypeError, AttributeError):
                ended[run_id] = None
    rk = db.run_keys
    erased = {r[0] for r in ledger.database.rows(sa.select(rk.c.run_id).where(
        rk.c.log_id == log_id, rk.c.run_id.in_(ids), rk.c.erased_at.is_not(None)), replica=True)}
    return [RunSummary(r[0], "ended" if r[0] in ended else "open", ended.get(r[0]), r[0] in started, int(r[1]),
                       int(r[2]), int(r[3]), int(r[4]), r[5], r[6], r[0] in erased) for r in rows]
