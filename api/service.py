"""The per-process state of the service (one `Service` per worker, on `app.state.service`)."""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from fastapi import Request

from rlhf_ledger.api import limits
from rlhf_ledger.api.audit import Denial, DenialRecorder, ensure_audit_log
from rlhf_ledger.api.config import Settings
from rlhf_ledger.api.metrics import Metrics
from rlhf_ledger.api.ops_metrics import OpsCollector, fork_check_all, install_chain_witness
from rlhf_ledger.api.problems import ApiProblem
from rlhf_ledger.api.ratelimit import TokenBuckets
from rlhf_ledger.api.tokens import Principal
from rlhf_ledger.core.errors import LedgerError
from rlhf_ledger.store.ledger import Ledger

log = logging.getLogger("api")


class Service:
    """Per-process state shared by the handlers."""

    def __init__(self, ledger: Ledger, settings: Settings, *, owns_ledger: bool):
        self.ledger = ledger
        self.settings = settings
        self.owns_ledger = owns_ledger
        self.metrics = Metrics(ledger)
        self.metrics.registry.register(OpsCollector(ledger))  # fork guard, replica, anchor rows
        self.buckets = TokenBuckets(settings.rate_per_second, settings.rate_burst)
        self.executor = ThreadPoolExecutor(max(1, settings.verify_threads), thread_name_prefix="verify")
        self.recorder: DenialRecorder | None = None
        self.service_key_id: str | None = None
        # Failed authentications (unknown or malformed tokens) have their own, stricter bucket
        # per client address: each one costs a hash lookup and feeds the denial aggregate.
        self.auth_failures = TokenBuckets(settings.auth_fail_rate, settings.auth_fail_burst)
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None

    def start(self) -> None:
        install_chain_witness(self.ledger)
        for why in fork_check_all(self.ledger):  # at start: a restored database says so at once
            log.error("refusing to sign: %s", why)
        for info in self.ledger.list_logs():  # producers registered before key events existed
            try:
                if n := self.ledger.migrate_keys(info.log_id):
                    log.info("log %s: wrote %d legacy key event(s) (docs/keys.md)", info.log_id, n)
            except LedgerError as e:
                log.error("log %s: producers' key events not written: %s", info.log_id, e)
        limits.preload()  # lazily used imports happen now, then process-wide limits are restored
        signer = ensure_audit_log(self.ledger, self.settings.audit_log_id)
        self.service_key_id = signer.key_id
        self.recorder = DenialRecorder(
            self.ledger, signer, self.settings.audit_log_id, window=self.settings.denial_window,
            max_records_per_minute=self.settings.audit_max_records_per_minute, cap_period=self.settings.audit_cap_period,
        )
        self.recorder.start()
        limits.restore_limits()
        if self.settings.checkpoint_interval > 0:
            self._ticker = threading.Thread(target=self._checkpoint_loop, name="checkpointer", daemon=True)
            self._ticker.start()

    def stop(self) -> None:
        self._stop.set()
        if self.recorder is not None:
            self.recorder.stop()
        if self._ticker is not None:
            self._ticker.join(timeout=10)
        self.executor.shutdown(wait=True)
        if self.owns_ledger:
            self.ledger.close()

    def _checkpoint_loop(self) -> None:
        # The time policy of checkpoints (the size policy runs inside append). Every worker may
        # run this: checkpoint() holds the log lock and returns an existing checkpoint as is.
        while not self._stop.wait(self.settings.checkpoint_interval):
            try:
                for info in self.ledger.list_logs():
                    self.ledger.maybe_checkpoint(info.log_id)
            except Exception as e:  # noqa: BLE001 - keep ticking through transient DB errors
                log.warning("checkpoint sweep failed: %s", e)

    def deny(self, request: Request, p: Principal, status: int, reason: str, detail: str,
             errors: list[dict] | None = None) -> ApiProblem:
        """Count and record a 401/403 (a signed audit-log event, docs/api.md), return its problem."""
        self.metrics.denials.labels(str(status), reason).inc()
        client = request.client.host if request.client else ""
        if self.recorder is not None:
            self.recorder.record(
                Denial(
                    ts=time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + ".000000Z",
                    method=request.method,
                    path=request.url.path[:512],
                    status=status,
                    reason=reason,
                    token_id=p.token_id,
                    role=str(p.role),
                    client=client,
                )
            )
        headers = {"WWW-Authenticate": 'Bearer realm="rlhf-ledger"'} if status == 401 else None
        return ApiProblem(status, reason, detail, errors=errors, headers=headers)


def get_service(request: Request) -> Service:
    return request.app.state.service

