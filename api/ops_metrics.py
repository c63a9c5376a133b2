"""Operational gauges read at scrape time: the fork guard, read replicas and anchor rows.

Separate from api/metrics.py (request counters) because these describe the deployment: a log
refusing to sign (ledger/fork_guard.py), how far the read replica is behind the primary
(ledger/replica.py), and anchoring rows by status (failures, age of what is not yet anchored).
Alert rules over them: deploy/prometheus/rules/ledger.rules.yml.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from rlhf_ledger.store.database import DatabaseError
from rlhf_ledger.store.ledger import Ledger
from rlhf_ledger.store.replica import replica_status


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
        except DatabaseError:
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
        counts = lg.anchors.counts_by_status()
        signed = lg.oldest_unanchored()  # per log: when its oldest checkpoint not yet anchored was signed
        oldest = {log_id: 0.0 if t is None else max(0.0, now - t) for log_id, t in signed.items()}
        return list(signed), [(log_id, str(status), n) for log_id, status, n in counts], oldest

    def _replica(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        lg = self.ledger
        if not lg.has_replica:  # no DATABASE_READ_URL
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
    return [why for log_id in ledger.log_ids() if (why := ledger.fork_check(log_id)) is not None]


def install_chain_witness(ledger: Ledger) -> None:
    """With RLHF_CHAIN_RPC and RLHF_ANCHOR_CONTRACT set, the chain's anchored roots also guard signing."""
    import os

    if ledger.fork_guard is None or not (os.environ.get("RLHF_CHAIN_RPC") and os.environ.get("RLHF_ANCHOR_CONTRACT")):
        return
    from rlhf_ledger.anchoring.fork_witness import witness_from_env  # web3 is imported only when a chain is configured

    w = witness_from_env()
    if w is not None:
        ledger.fork_guard.add_witness(w)
