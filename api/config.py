"""Service settings, read from the environment (docs/api.md lists every variable)."""

from __future__ import annotations

import os
from dataclasses import dataclass


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

    @classmethod
    def from_env(cls) -> "Settings":
        return cls(
            data_dir=os.environ.get("RLHF_LEDGER_HOME") or None,
            database_url=os.environ.get("DATABASE_URL") or None,
            max_body_bytes=int(_num("RLHF_API_MAX_BODY_BYTES", cls.max_body_bytes)),
            max_batch=int(_num("RLHF_API_MAX_BATCH", cls.max_batch)),
            rate_per_second=_num("RLHF_API_RATE", cls.rate_per_second),
            rate_burst=_num("RLHF_API_BURST", cls.rate_burst),
            request_timeout=_num("RLHF_API_TIMEOUT", cls.request_timeout),
            checkpoint_interval=_num("RLHF_API_CHECKPOINT_INTERVAL", cls.checkpoint_interval),
            audit_log_id=os.environ.get("RLHF_API_AUDIT_LOG") or cls.audit_log_id,
            verify_threads=int(_num("RLHF_API_VERIFY_THREADS", cls.verify_threads)),
        )
