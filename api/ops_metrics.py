"""Operational gauges read at scrape time: the fork guard, read replicas and anchor rows.

Separate from api/metrics.py (request counters) because these describe the deployment: a log
refusing to sign (ledger/fork_guard.py), how far the read replica is behind the primary
(ledger/replica.py), and anchoring rows by status (failures, age of what is not yet anchored).
Alert rules over them: deploy/prometheus/rules/ledger.rules.yml.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import sqlalchemy as sa
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from rlhf_ledger.store import db
from rlhf_ledger.store.replica import replica_status
from rlhf_ledger.store.ledger import Ledger

SETTLED = ("confirmed", "finalized")


class OpsCollector(Collector):
    def __init__(self, ledger: Ledger):
        self.ledger = ledger

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        lg = self.ledger
        refused = GaugeMetricFamily("ledger_log_signing_refused",
                                    "1 while the log refuses to sign and append: its database is behind or inconsistent "
                                    "with a published checkpoint (reason in /readyz and the log)", labels=["log_id"])
        rows = GaugeMetricFamily("ledger_anchor_rows", "Anchor rows by status", labels=["log_id", "status"])
        age = GaugeMetricFamily("ledger_unanchored_checkpoint_age_seconds",
                                "Age of the oldest signed checkpoint not yet covered by a confirmed or finalized anchor "
                                "(0 when everything signed is anchored)", labels=["log_id"])
        now = time.time()
        refusals = lg.fork_guard.refusals() if lg.fork_guard is not None else {}
        try:
            facts = self._facts(now)
        except sa.exc.SQLAlchemyError:
            yield GaugeMetricFamily("ledger_database_up", "1 if the primary database answers", value=0)
            yield GaugeMetricFamily("ledger_ready", "1 if /readyz would answer 200", value=0)
            return
        logs, counts, oldest = facts
        yield GaugeMetricFamily("ledger_database_up", "1 if the primary database answers", value=1)
        yield GaugeMetricFamily("ledger_ready", "1 if /readyz would answer 200", value=0 if refusals else 1)
        for log_id in sorted(logs):
            refused.add_metric([log_id], 1 if log_id in refusals else 0)
            age.add_metric([log_id], oldest[log_id])
        for log_id, status, n in counts:
            rows.add_metric([log_id, status], n)
        yield refused
        yield rows
        yield age
        yield from self._replica()

    def _facts(self, now: float) -> tuple[list[str], list, dict[str, float]]:
        lg = self.ledger
        with lg.engine.connect() as conn:
            logs = [r.log_id for r in conn.execute(sa.select(db.logs.c.log_id))]
            a = db.anchors.c
            counts = conn.execute(sa.select(a.log_id, a.status, sa.func.count()).group_by(a.log_id, a.status)).all()
            settled = dict(conn.execute(sa.select(a.log_id, sa.func.max(a.checkpoint_size))
                                        .where(a.status.in_(SETTLED)).group_by(a.log_id)).all())
            c = db.checkpoints.c
            oldest = {}
            for log_id in logs:
                created = conn.execute(sa.select(sa.func.min(c.created_at)).where(
                    c.log_id == log_id, c.size > int(settled.get(log_id) or 0))).scalar()
                oldest[log_id] = 0.0 if created is None else max(0.0, now - float(created))
            conn.rollback()
        return logs, counts, oldest

    def _replica(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        lg = self.ledger
        if lg.replica_engine is None:
            return
        st = replica_status(lg)
        up = GaugeMetricFamily("ledger_replica_up", "1 if the read replica (DATABASE_READ_URL) answers", value=1 if st.up else 0)
        yield up
        lag = GaugeMetricFamily("ledger_replica_lag_events", "Primary log size minus the replica's", labels=["log_id"])
        for log_id, n in sorted(st.lag_events.items()):
            lag.add_metric([log_id], n)
        yield lag
        if st.replay_lag_seconds is not None:
            yield GaugeMetricFamily("ledger_replica_replay_lag_seconds",
                                    "Seconds since the replica last replayed a transaction (grows while the primary is idle)",
                                    value=st.replay_lag_seconds)
        yield CounterMetricFamily("ledger_replica_fallbacks", "Reads the replica had not replayed yet, answered by the primary",
                                  value=lg.replica_fallbacks)


def fork_check_all(ledger: Ledger) -> list[str]:
    """Re-check every log against its published references; the reasons of those refused."""
    if ledger.fork_guard is None:
        return []
    with ledger.engine.connect() as conn:
        logs = [r.log_id for r in conn.execute(sa.select(db.logs.c.log_id).order_by(db.logs.c.log_id))]
        conn.rollback()
    return [why for log_id in logs if (why := ledger.fork_check(log_id)) is not None]


def install_chain_witness(ledger: Ledger) -> None:
    """With RLHF_CHAIN_RPC and RLHF_ANCHOR_CONTRACT set, the chain's anchored roots also guard signing."""
    import os

    if ledger.fork_guard is None or not (os.environ.get("RLHF_CHAIN_RPC") and os.environ.get("RLHF_ANCHOR_CONTRACT")):
        return
    from rlhf_ledger.anchoring.fork_witness import witness_from_env  # web3 is imported only when a chain is configured

    w = witness_from_env()
    if w is not None:
        ledger.fork_guard.add_witness(w)
