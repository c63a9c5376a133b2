"""Service settings, read from the environment (docs/api.md lists every variable)."""

from __future__ import annotations

import os
from dataclasses import dataclass

from rlhf_ledger.core.secret_env import env_secret


def _num(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return float(raw)
    except ValueError:
        raise SystemExit(f"environment variable {name}={raw!r} is not a number") from None


@dataclass(frozen=True)
class Settings:
    data_dir: str | None = None  # RLHF_LEDGER_HOME (default ./data); DATABASE_URL wins for the DB
    database_url: str | None = None
    max_body_bytes: int = 16 * 1024 * 1024
    max_batch: int = 1000
    rate_per_second: float = 50.0  # per token (or per client address for the public); 0 = off
    rate_burst: float = 100.0
    request_timeout: float = 30.0  # seconds until the response starts
    checkpoint_interval: float = 5.0  # seconds between maybe_checkpoint sweeps; 0 = off
    audit_log_id: str = "audit"
    verify_threads: int = 2  # signature checks of a batch are spread over this many threads
    # Cost caps (docs/api.md "Limits")
    max_json_values: int = 500_000  # JSON values per submission body (memory: ~100 B per parsed value)
    slow_event_weight: int = 10  # batch units of an event on the slow canonicalisation path (at least)
    slow_units_per_kib: int = 3  # ... or this many per KiB of its JSON, if more
    max_bundle_range: int = 1000  # entries per range bundle (pages beyond)
    # Denials (docs/api.md "Denial records")
    auth_fail_rate: float = 1.0  # failed authentications per second and client address
    auth_fail_burst: float = 20.0
    denial_window: float = 10.0  # seconds: one aggregated record per client per window
    audit_max_records_per_minute: int = 600  # hard cap on denial records; the overflow is itself recorded
    audit_cap_period: float = 60.0  # the cap's period in seconds (a minute; shorter only in tests)

    @classmethod
    def from_env(cls) -> Settings:
        return cls(
            data_dir=os.environ.get("RLHF_LEDGER_HOME") or None,
            database_url=env_secret("DATABASE_URL") or None,
            max_body_bytes=int(_num("RLHF_API_MAX_BODY_BYTES", cls.max_body_bytes)),
            max_batch=int(_num("RLHF_API_MAX_BATCH", cls.max_batch)),
            rate_per_second=_num("RLHF_API_RATE", cls.rate_per_second),
            rate_burst=_num("RLHF_API_BURST", cls.rate_burst),
            request_timeout=_num("RLHF_API_TIMEOUT", cls.request_timeout),
            checkpoint_interval=_num("RLHF_API_CHECKPOINT_INTERVAL", cls.checkpoint_interval),
            audit_log_id=os.environ.get("RLHF_API_AUDIT_LOG") or cls.audit_log_id,
            verify_threads=int(_num("RLHF_API_VERIFY_THREADS", cls.verify_threads)),
            max_json_values=int(_num("RLHF_API_MAX_JSON_VALUES", cls.max_json_values)),
            slow_event_weight=max(1, int(_num("RLHF_API_SLOW_EVENT_WEIGHT", cls.slow_event_weight))),
            slow_units_per_kib=max(0, int(_num("RLHF_API_SLOW_UNITS_PER_KIB", cls.slow_units_per_kib))),
            max_bundle_range=max(1, int(_num("RLHF_API_MAX_BUNDLE_RANGE", cls.max_bundle_range))),
            auth_fail_rate=_num("RLHF_API_AUTH_FAIL_RATE", cls.auth_fail_rate),
            auth_fail_burst=_num("RLHF_API_AUTH_FAIL_BURST", cls.auth_fail_burst),
            denial_window=_num("RLHF_API_DENIAL_WINDOW", cls.denial_window),
            audit_max_records_per_minute=int(_num("RLHF_API_AUDIT_MAX_PER_MINUTE", cls.audit_max_records_per_minute)),
            audit_cap_period=_num("RLHF_API_AUDIT_CAP_PERIOD", cls.audit_cap_period),
        )
