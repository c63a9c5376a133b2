"""Denials (401/403) become signed `access.denied` events of the ledger's `audit` log.

Why a log and not a table: a denial record in a Merkle log signed by a service producer key is
tamper-evident like every other event, is checkpointed and anchored with the rest, and can be
exported in a proof bundle. Each server process writes its own run (`api-<host>-<pid>-<rand>`) so
several worker processes never contend for one producer chain. The client address is personal
data: it is a salted commitment in the event; its opening is stored encrypted (auditor access).

Denials cost the attacker, not the ledger: repeated denials are aggregated (one record per
client, status, reason and token per window, with a count), records per minute are capped (the
excess is itself recorded, as one overflow record per minute), and a background thread appends
each window's records as one batch. docs/api.md describes the event bodies.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from rlhf_ledger.core.errors import ConflictError, KeyFileError, NotFoundError, RevokedKeyError
from rlhf_ledger.core.events import commit_fields, make_event, sha256_hex, sign_event, valid_id
from rlhf_ledger.core.jcs import canonicalize
from rlhf_ledger.core.keys import Signer, read_key_file, write_key_file
from rlhf_ledger.core.redact import redact_secrets
from rlhf_ledger.core.roles import Role
from rlhf_ledger.store.ledger import Ledger

log = logging.getLogger("rlhf_ledger.api.audit")

AUDIT_LOG_ID = "audit"
SERVICE_KEY_FILE = "api-service.key.json"
DENIAL_TYPE = "access.denied"
OVERFLOW_TYPE = "access.denied_overflow"


@dataclass(frozen=True)
class Denial:
    ts: str
    method: str
    path: str
    status: int
    reason: str
    token_id: str | None
    role: str  # a rlhf_ledger.core.roles.Role value
    client: str


def _load_or_create(path: Path, passphrase: str) -> Signer:
    if not path.exists():
        try:
            write_key_file(path, Signer.generate(), passphrase, label="api service key (audit log producer)")
        except KeyFileError:
            pass  # created by a concurrent process
    for _ in range(50):  # a concurrent creator may still be writing the file
        try:
            return read_key_file(path, passphrase)
        except KeyFileError:
            time.sleep(0.1)
    return read_key_file(path, passphrase)


def ensure_audit_log(ledger: Ledger, log_id: str = AUDIT_LOG_ID) -> Signer:
    """Create the audit log and the service producer key if missing; return the service signer.

    Safe when several processes start at once: key files are created with O_EXCL and the
    log row under the ledger's lock, so exactly one creator wins and the others read. A service
    key found revoked (revoked offline; the API refuses to) is rotated: the old file is moved
    aside and a new key is made and registered, so denials are recorded again.
    """
    try:
        ledger.log_info(log_id)
    except NotFoundError:
        try:
            ledger.init_log(log_id, checkpoint_every_events=100, checkpoint_every_seconds=60.0)
        except (ConflictError, KeyFileError):
            ledger.log_info(log_id)  # another process created it meanwhile
    path = Path(ledger.keys_dir) / SERVICE_KEY_FILE
    passphrase = ledger.key_passphrase()  # the ledger's own key passphrase protects this key too
    for _ in range(5):
        signer = _load_or_create(path, passphrase)
        try:
            ledger.register_producer(log_id, signer.public_key, label="api service (access denials)")
            return signer
        except KeyFileError as e:  # registering is a key event signed by the audit log's key
            raise KeyFileError(f"the {log_id!r} log's key is not in this data directory ({e.message}): every process "
                               "of the service needs the same keys directory (docs/operations.md)",
                               where=e.where) from None
        except RevokedKeyError:
            log.warning("the audit service key %s... is revoked; rotating it", signer.key_id[:16])
            try:  # one of several starting processes wins the rename; the others then read the new key
                path.rename(path.with_name(f"{SERVICE_KEY_FILE}.revoked-{signer.key_id[:16]}"))
            except FileNotFoundError:
                pass
    raise KeyFileError("could not rotate the revoked audit service key", where=f"key file {SERVICE_KEY_FILE}")


_HOST_RE = re.compile(r"[^A-Za-z0-9.-]+")


def _run_id() -> str:
    # The run id must follow the id grammar whatever the host name holds (spaces, Unicode,
    # underscores ...): other characters become '-'.
    host = _HOST_RE.sub("-", socket.gethostname())[:40].strip("-.") or "host"
    run_id = f"api-{host}-{os.getpid()}-{os.urandom(4).hex()}"
    assert valid_id(run_id), run_id
    return run_id


@dataclass
class _Aggregate:
    first: Denial
    count: int = 1
    last_ts: str = ""


class DenialRecorder:
    """Denials aggregated per (client, status, reason, token) and window, flushed as one signed
    batch per window into the audit log, with a hard cap of records per minute (the excess is
    counted in one `access.denied_overflow` record per minute)."""

    MAX_OPEN = 100_000  # distinct aggregates held in memory per window

    def __init__(self, ledger: Ledger, signer: Signer, log_id: str = AUDIT_LOG_ID, interval: float = 0.2, *,
                 window: float = 10.0, max_records_per_minute: int = 600, cap_period: float = 60.0):
        self.ledger = ledger
        self.signer = signer
        self.log_id = log_id
        self.interval = interval
        self.window = max(window, interval)
        self.max_per_minute = max(1, max_records_per_minute)
        self.run_id = _run_id()
        self._seq = 0
        self._prev: str | None = None
        self._lock = threading.Lock()
        self._open: dict[tuple, _Aggregate] = {}
        self._window_start = time.monotonic()
        self.cap_period = max(cap_period, interval)  # "minute": 60 s, shorter in tests
        self._minute = int(time.time() // self.cap_period)
        self._minute_records = 0
        self._overflow = {"records": 0, "denials": 0}
        self._stop = threading.Event()
        self.failed = 0
        self.records = 0
        self._thread = threading.Thread(target=self._loop, name="denial-recorder", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self._flush(force=True)

    def record(self, d: Denial) -> None:
        key = (d.client, d.status, d.reason, d.token_id, d.role)
        with self._lock:
            agg = self._open.get(key)
            if agg is not None:
                agg.count += 1
                agg.last_ts = d.ts
            elif len(self._open) < self.MAX_OPEN:
                self._open[key] = _Aggregate(d, 1, d.ts)
            else:  # never block or grow without bound: counted, not itemised
                self._overflow["denials"] += 1

    def count_suppressed(self, client: str) -> None:
        """A request refused (429) before authentication because its address keeps failing:
        counted in that address's aggregate of rate-limited denials."""
        self.record(Denial(ts=_now(), method="*", path="*", status=429, reason="auth_rate_limited", token_id=None,
                           role=str(Role.PUBLIC), client=client))

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self._flush()

    def _flush(self, force: bool = False) -> None:
        now = time.monotonic()
        minute = int(time.time() // self.cap_period)
        with self._lock:
            due = force or now - self._window_start >= self.window
            if not due and minute == self._minute:
                return
            items = list(self._open.values()) if due else []
            if due:
                self._open = {}
                self._window_start = now
            overflow = None
            if minute != self._minute:
                if self._overflow["records"] or self._overflow["denials"]:
                    overflow = (self._minute, dict(self._overflow))
                self._minute, self._minute_records = minute, 0
                self._overflow = {"records": 0, "denials": 0}
            room = self.max_per_minute - self._minute_records
            kept, over = items[:max(0, room)], items[max(0, room):]
            self._minute_records += len(kept)
            for agg in over:
                self._overflow["records"] += 1
                self._overflow["denials"] += agg.count
        envs, seq, prev = [], self._seq, self._prev
        bodies: list[tuple[str, str, dict, list[str]]] = []
        for agg in kept:
            d = agg.first
            bodies.append((DENIAL_TYPE, d.ts, {
                "method": d.method, "path": d.path, "status": d.status, "reason": d.reason,
                "token_id": d.token_id, "role": d.role, "client": d.client,
                "count": agg.count, "last_ts": agg.last_ts or d.ts,
            }, ["client"]))
        if overflow is not None:
            m, o = overflow
            bodies.append((OVERFLOW_TYPE, _now(), {
                "period_start": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(m * self.cap_period)),
                "period_seconds": self.cap_period,
                "cap_per_period": self.max_per_minute, "records_not_written": o["records"], "denials_not_itemised": o["denials"],
            }, []))
        if not bodies:
            return
        for typ, ts, body, secret in bodies:
            body, openings = commit_fields(body, secret)
            ev = make_event(log_id=self.log_id, run_id=self.run_id, type=typ, producer=self.signer.key_id,
                            seq=seq, prev=prev, body=body, ts=ts)
            env = sign_event(ev, self.signer)
            if openings:
                env["openings"] = openings
            envs.append(env)
            prev, seq = sha256_hex(canonicalize(ev)), seq + 1
        try:
            self.ledger.append(envs, log_id=self.log_id)
            self._seq, self._prev = seq, prev  # advance only after the commit
            self.records += len(envs)
        except Exception as e:  # noqa: BLE001 - a database outage must not kill the thread
            self.failed += len(envs)
            log.error("could not append %d denial record(s) to log %r: %s", len(envs), self.log_id, redact_secrets(str(e)))


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + ".000000Z"
