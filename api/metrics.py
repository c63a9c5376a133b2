"""Prometheus metrics of one server process (a per-app registry, so tests can build many apps).

Counters and the histogram are per process; the lag gauges are read from the database at
scrape time, so they agree across worker processes.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from rlhf_ledger.store.ledger import Ledger


class LagCollector(Collector):
    """checkpoint lag = log size - latest checkpoint size; anchoring lag = log size - largest
    checkpoint size covered by a confirmed or finalized anchor."""

    def __init__(self, ledger: Ledger):
        self.ledger = ledger

    def collect(self) -> Iterator[GaugeMetricFamily]:
        cp = GaugeMetricFamily("ledger_checkpoint_lag_events", "Events appended since the latest signed checkpoint", labels=["log_id"])
        an = GaugeMetricFamily(
            "ledger_anchoring_lag_events", "Events not yet covered by a confirmed or finalized anchor", labels=["log_id"]
        )
        size = GaugeMetricFamily("ledger_log_size_events", "Entries in the log", labels=["log_id"])
        for lag in self.ledger.log_lags():  # one read on the primary: the figures agree
            size.add_metric([lag.log_id], lag.size)
            cp.add_metric([lag.log_id], lag.size - lag.checkpoint_size)
            an.add_metric([lag.log_id], lag.size - lag.anchored_size)
        yield size
        yield cp
        yield an


class Metrics:
    def __init__(self, ledger: Ledger | None = None):
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.accepted = Counter("ledger_events_accepted_total", "Events accepted (new, not duplicates)", ["log_id"], registry=r)
        self.duplicates = Counter("ledger_events_duplicate_total", "Re-submitted events answered idempotently", ["log_id"], registry=r)
        self.rejected = Counter("ledger_events_rejected_total", "Events refused, by reason code", ["reason"], registry=r)
        self.denials = Counter("ledger_api_denials_total", "Requests denied (401/403), by status and reason", ["status", "reason"], registry=r)
        self.rate_limited = Counter("ledger_api_rate_limited_total", "Requests refused with 429", registry=r)
        self.requests = Counter("ledger_api_requests_total", "HTTP requests by route and status", ["route", "status"], registry=r)
        self.proof_latency = Histogram(
            "ledger_proof_latency_seconds",
            "Time to build a proof response",
            ["kind"],
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0),
            registry=r,
        )
        if ledger is not None:
            r.register(LagCollector(ledger))
