"""Read replicas (DATABASE_READ_URL): why a lagging replica never gives a wrong answer.

Appends, checkpoints and every read inside a write go to the primary (DATABASE_URL). Plain
reads of the log (entries, proofs, checkpoints, bundles: `Database.rows` and `Database.read` with
`replica=True`, store/database.py) go to the replica first. A PostgreSQL streaming replica
replays the primary's WAL in commit order, so each of its snapshots is the primary's state at
some earlier commit: a prefix of the log with all of its nodes and checkpoints (they are written
in the same transaction as the entries).
Stored nodes never change once written (docs/merkle.md). Hence anything the replica returns is
exactly what the primary would return for the same explicit size; what it lacks (a size beyond
its tree: ProofError; a row it has not replayed: NotFoundError or no rows) is asked of the
primary at once, in the same call. No proof is ever built for a size other than the one asked.

`replica_status()` feeds the metrics (api/ops_metrics.py) and benchmarks/replica.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import sqlalchemy as sa

from rlhf_ledger.store import db

if TYPE_CHECKING:
    from rlhf_ledger.store.ledger import Ledger


@dataclass
class ReplicaStatus:
    up: bool
    lag_events: dict[str, int] = field(default_factory=dict)  # primary size - replica size, per log
    replay_lag_seconds: float | None = None  # now() - pg_last_xact_replay_timestamp() on the replica
    in_recovery: bool | None = None  # False would mean the "replica" was promoted (or is a primary)


def _sizes(conn: sa.Connection) -> dict[str, int]:
    return {r.log_id: int(r.size) for r in conn.execute(sa.select(db.logs.c.log_id, db.logs.c.size))}


def replica_status(ledger: Ledger) -> ReplicaStatus:
    database = ledger.database
    if database.replica is None:
        return ReplicaStatus(up=False)
    primary = database.read(_sizes)

    def on_replica(conn: sa.Connection) -> tuple[dict[str, int], object, object]:
        rec, lag = conn.execute(sa.text(
            "SELECT pg_is_in_recovery(), EXTRACT(EPOCH FROM (now() - pg_last_xact_replay_timestamp()))"
        )).one()
        return _sizes(conn), rec, lag

    try:
        replica, rec, lag = database.read_replica(on_replica)
    except sa.exc.SQLAlchemyError:
        return ReplicaStatus(up=False)
    return ReplicaStatus(
        up=True,
        lag_events={k: v - replica.get(k, 0) for k, v in primary.items()},
        replay_lag_seconds=None if lag is None else max(0.0, float(lag)),  # type: ignore[arg-type]
        in_recovery=bool(rec),
    )
