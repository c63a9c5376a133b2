"""Denials (401/403) become signed `access.denied` events of the ledger's `audit` log.

Why a log and not a table: a denial record in a Merkle log signed by a service producer key is
tamper-evident like every other event, is checkpointed and anchored with the rest, and can be
exported in a proof bundle. Each server process writes its own run (`api-<host>-<pid>-<rand>`) so
several worker processes never contend for one producer chain. The client address is personal
data: it is a salted commitment in the event; its opening is stored encrypted (auditor access).

Records are queued and appended in batches by a background thread (a flood of bad requests
costs one transaction per batch, not one per request). docs/api.md describes the event body.
"""

from __future__ import annotations

import logging
import os
import queue
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from ledger.errors import ConflictError, KeyFileError, NotFoundError
from ledger.events import commit_fields, make_event, sha256_hex, sign_event
from ledger.jcs import canonicalize
from ledger.keys import Signer, read_key_file, write_key_file
from ledger.store import Ledger

log = logging.getLogger("api.audit")

AUDIT_LOG_ID = "audit"
SERVICE_KEY_FILE = "api-service.key.json"
DENIAL_TYPE = "access.denied"


@dataclass(frozen=True)
class Denial:
    ts: str
    method: str
    path: str
    status: int
    reason: str
    token_id: str | None
    role: str
    client: str


def ensure_audit_log(ledger: Ledger, log_id: str = AUDIT_LOG_ID) -> Signer:
    """Create the audit log and the service producer key if missing; return the service signer.

    Safe when several processes start at once: key files are created with O_EXCL and the
    log row under the ledger's lock, so exactly one creator wins and the others read.
    """
    try:
        ledger.log_info(log_id)
    except NotFoundError:
        try:
            ledger.init_log(log_id, checkpoint_every_events=100, checkpoint_every_seconds=60.0)
        except (ConflictError, KeyFileError):
            ledger.log_info(log_id)  # another process created it meanwhile
    path = Path(ledger.keys_dir) / SERVICE_KEY_FILE
    passphrase = ledger._get_passphrase()  # the ledger's own key passphrase protects this key too
    if not path.exists():
        try:
            write_key_file(path, Signer.generate(), passphrase, label="api service key (audit log producer)")
        except KeyFileError:
            pass  # created by a concurrent process
    for _ in range(50):  # a concurrent creator may still be writing the file
        try:
            signer = read_key_file(path, passphrase)
            break
        except KeyFileError:
            time.sleep(0.1)
    else:
        signer = read_key_file(path, passphrase)
    ledger.register_producer(log_id, signer.public_key, label="api service (access denials)")
    return signer


class DenialRecorder:
    """Queue of denials flushed as one signed batch per interval into the audit log."""

    def __init__(self, ledger: Ledger, signer: Signer, log_id: str = AUDIT_LOG_ID, interval: float = 0.2):
        self.ledger = ledger
        self.signer = signer
        self.log_id = log_id
        self.interval = interval
        self.run_id = f"api-{socket.gethostname()[:40]}-{os.getpid()}-{os.urandom(4).hex()}"
        self._seq = 0
        self._prev: str | None = None
        self._q: queue.Queue[Denial] = queue.Queue(maxsize=100_000)
        self._stop = threading.Event()
        self._flushed = threading.Condition()
        self._pending = 0
        self.dropped = 0
        self.failed = 0
        self._thread = threading.Thread(target=self._loop, name="denial-recorder", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self._flush()

    def record(self, d: Denial) -> None:
        try:
            self._q.put_nowait(d)
        except queue.Full:  # never block a request on auditing; the metric still counts it
            self.dropped += 1

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self._flush()

    def _flush(self) -> None:
        items: list[Denial] = []
        while len(items) < 1000:
            try:
                items.append(self._q.get_nowait())
            except queue.Empty:
                break
        if not items:
            return
        envs, seq, prev = [], self._seq, self._prev
        for d in items:
            body = {
                "method": d.method,
                "path": d.path,
                "status": d.status,
                "reason": d.reason,
                "token_id": d.token_id,
                "role": d.role,
                "client": d.client,
            }
            body, openings = commit_fields(body, ["client"])
            ev = make_event(
                log_id=self.log_id, run_id=self.run_id, type=DENIAL_TYPE, producer=self.signer.key_id,
                seq=seq, prev=prev, body=body, ts=d.ts,
            )
            env = sign_event(ev, self.signer)
            env["openings"] = openings
            envs.append(env)
            prev, seq = sha256_hex(canonicalize(ev)), seq + 1
        try:
            self.ledger.append(envs, log_id=self.log_id)
            self._seq, self._prev = seq, prev  # advance only after the commit
        except Exception as e:  # noqa: BLE001 - a database outage must not kill the thread
            self.failed += len(items)
            log.error("could not append %d denial record(s) to log %r: %s", len(items), self.log_id, e)
