"""Gauges the service reads at scrape time (rlhf_ledger.api.metrics, .ops_metrics), each from one
read transaction on the primary so that the figures of one scrape agree with each other."""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa

from rlhf_ledger.core.anchor_status import SETTLED
from rlhf_ledger.store import db
from rlhf_ledger.store.database import Database


@dataclass(frozen=True)
class LogLag:
    log_id: str
    size: int
    checkpoint_size: int  # newest signed checkpoint (0 if none)
    anchored_size: int  # largest checkpoint with a settled anchor (0 if none)


def log_lags(database: Database) -> list[LogLag]:
    """Per log (by id): its size, its newest checkpoint and its largest settled anchor."""
    a, c = db.anchors.c, db.checkpoints.c
    settled = [str(s) for s in SETTLED]

    def read(conn: sa.Connection) -> list[LogLag]:
        sizes = {r.log_id: int(r.size) for r in conn.execute(sa.select(db.logs.c.log_id, db.logs.c.size))}
        cps: dict[str, int | None] = {log_id: size for log_id, size in conn.execute(
            sa.select(c.log_id, sa.func.max(c.size)).group_by(c.log_id))}
        anchored: dict[str, int | None] = {log_id: size for log_id, size in conn.execute(
            sa.select(a.log_id, sa.func.max(a.checkpoint_size)).where(a.status.in_(settled)).group_by(a.log_id))}
        return [LogLag(log_id, n, int(cps.get(log_id) or 0), int(anchored.get(log_id) or 0)) for log_id, n in sorted(sizes.items())]

    return database.read(read)


def oldest_unanchored(database: Database) -> dict[str, float | None]:
    """Per log: when its oldest signed checkpoint not covered by a settled anchor was signed
    (created_at), None when everything signed is anchored."""
    a, c = db.anchors.c, db.checkpoints.c
    settled_statuses = [str(s) for s in SETTLED]

    def read(conn: sa.Connection) -> dict[str, float | None]:
        logs = [r.log_id for r in conn.execute(sa.select(db.logs.c.log_id))]
        settled: dict[str, int | None] = {log_id: size for log_id, size in conn.execute(
            sa.select(a.log_id, sa.func.max(a.checkpoint_size)).where(a.status.in_(settled_statuses)).group_by(a.log_id))}
        out: dict[str, float | None] = {}
        for log_id in logs:
            created = conn.execute(sa.select(sa.func.min(c.created_at)).where(
                c.log_id == log_id, c.size > int(settled.get(log_id) or 0))).scalar()
            out[log_id] = None if created is None else float(created)
        return out

    return database.read(read)
