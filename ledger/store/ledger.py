"""The ledger store: appends signed events to per-log RFC 9162 trees, issues checkpoints.

One database (SQLite file by default, PostgreSQL through DATABASE_URL) holds every log. An
append batch is checked, then applied in one transaction that holds the log's write lock
(SQLite: BEGIN IMMEDIATE; PostgreSQL: SELECT ... FOR UPDATE on the log row), so concurrent
writers in several processes produce one log with gap-free indices. A batch is acknowledged
only after its transaction committed. See docs/storage.md.
"""

from __future__ import annotations

import base64
import json
import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from rlhf_ledger.store import db
from rlhf_ledger.core import merkle, sigverify
from rlhf_ledger.core.checkpoints import Checkpoint, default_origin, parse_and_verify, sign_checkpoint, vkey
from rlhf_ledger.core.errors import ConflictError, EventError, LedgerError, NotFoundError, ProofError, ReservedRunError, RevokedKeyError, RunEndedError, SequenceError, SignatureError, UnknownKeyError
from rlhf_ledger.core.events import ParsedEvent, make_event, parse_envelope, sign_event
from rlhf_ledger.core import key_events as kev
from rlhf_ledger.store.fork_guard import ForkGuard, PublishedCheckpoints, SigningRefused, default_published_dir
from rlhf_ledger.core.keys import PASSPHRASE_ENV, log_key_file_name, valid_origin, Signer, key_id, read_key_file, write_key_file
from rlhf_ledger.store.migrate import upgrade
from rlhf_ledger.store.payloads import KeyRing, Opened, PayloadCrypto, PayloadError

if TYPE_CHECKING:
    from rlhf_ledger.store.erasure import Erasure

MAX_BATCH = 10_000


@dataclass(frozen=True)
class AppendResult:
    index: int
    event_id: str
    leaf_hash: bytes
    duplicate: bool

    def as_json(self) -> dict:
        return {
            "index": self.index,
            "event_id": self.event_id,
            "leaf_hash": base64.b64encode(self.leaf_hash).decode(),
            "duplicate": self.duplicate,
        }


class BatchRejected(LedgerError):
    """At least one event of a batch was refused; nothing of the batch was stored."""

    code = "batch_rejected"

    def __init__(self, errors: list[tuple[int, LedgerError]]):
        self.errors = errors
        first_pos, first = errors[0]
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        super().__init__(f"event {first_pos} refused: {first}{more}")


@dataclass(frozen=True)
class LogInfo:
    log_id: str
    origin: str
    public_key: bytes
    size: int
    checkpoint_every_events: int
    checkpoint_every_seconds: float

    @property
    def vkey(self) -> str:
        return vkey(self.origin, self.public_key)

    @property
    def key_id(self) -> str:
        """The log key's id: the `producer` of the log's own records (docs/keys.md)."""
        return key_id(self.public_key)


def _claimed_log_id(envelopes: Sequence[Any]) -> str | None:
    for env in envelopes:
        ev = env.get("event") if isinstance(env, dict) else None
        if isinstance(ev, dict) and isinstance(ev.get("log_id"), str):
            return ev["log_id"]
    return None


def _claimed_producers(envelopes: Sequence[Any]) -> set[str]:
    out = set()
    for env in envelopes:
        ev = env.get("event") if isinstance(env, dict) else None
        if isinstance(ev, dict) and isinstance(ev.get("producer"), str):
            out.add(ev["producer"])
    return out


def _parse_chunk(
    envelopes: Sequence[Any], start: int, log_id: str | None, keys: dict[str, tuple[bytes, str]]
) -> list[ParsedEvent | LedgerError]:
    """Schema, log and key checks of a slice of a batch; signatures are checked after (sigverify).

    Each item becomes a ParsedEvent or the LedgerError that refuses it, so one pass reports
    every bad event of the batch.
    """
    out: list[ParsedEvent | LedgerError] = []
    for j, env in enumerate(envelopes):
        i = start + j
        try:
            p = parse_envelope(env, where=f"events[{i}]")
            if p.event["log_id"] != log_id:
                raise EventError(f"event is for log {p.event['log_id']!r}, not {log_id!r}", where=f"events[{i}].event.log_id")
            if kev.is_reserved_run(p.event["run_id"]):
                raise ReservedRunError(f"runs starting {kev.RESERVED_RUN_PREFIX!r} hold the log's own records and take no "
                                       "submitted event", where=f"events[{i}].event.run_id")
            k = keys.get(p.producer)
            if k is None:
                raise UnknownKeyError("producer key is not registered for this log", where=f"events[{i}].event.producer")
            if k[1] != "active":
                raise RevokedKeyError("producer key is revoked", where=f"events[{i}].event.producer")
            out.append(p)
        except LedgerError as e:
            out.append(e)
    return out


def _signature_inputs(items: list[ParsedEvent | LedgerError], keys: dict[str, tuple[bytes, str]]) -> tuple[list, list, list]:
    parsed = [p for p in items if isinstance(p, ParsedEvent)]
    return [keys[p.producer][0] for p in parsed], [p.event_bytes for p in parsed], [p.sig for p in parsed]


def _apply_verdicts(items: list[ParsedEvent | LedgerError], start: int, verdicts: list[bool]) -> None:
    """Replace each parsed event whose signature failed by the error that refuses it."""
    ok = iter(verdicts)
    for j, p in enumerate(items):
        if isinstance(p, ParsedEvent) and not next(ok):
            items[j] = SignatureError("Ed25519 signature does not verify against the producer's key", where=f"events[{start + j}].sig")


def _prepare_chunk(
    envelopes: Sequence[Any], start: int, log_id: str | None, keys: dict[str, tuple[bytes, str]]
) -> list[ParsedEvent | LedgerError]:
    """Parse and verify a slice of a batch (inline or in a worker process)."""
    items = _parse_chunk(envelopes, start, log_id, keys)
    _apply_verdicts(items, start, sigverify.verify_many(*_signature_inputs(items, keys)))
    return items


class Ledger:
    """Access to every log in one database. Thread-safe; one instance per process is enough."""

    def __init__(self, engine: Engine, keys_dir: Path, *, passphrase: str | None = None, read_engine: Engine | None = None,
                 replica_engine: Engine | None = None, fork_guard: ForkGuard | None = None):
        self.engine = engine
        # SQLite: reads use plain deferred transactions (WAL snapshots) and never queue behind
        # writers for the write lock; PostgreSQL uses one engine for both.
        self.read_engine = read_engine or engine
        # DATABASE_READ_URL: a streaming replica for reads (ledger/replica.py explains why a
        # lagging replica never yields a wrong answer); None = read from the primary.
        self.replica_engine = replica_engine
        self.replica_fallbacks = 0  # reads the replica could not answer yet, served by the primary
        self._replica_down_until = 0.0
        self.fork_guard = fork_guard  # ledger/fork_guard.py; None only for bare test ledgers
        self.recovering = False  # set by `rlhf-ledger recover`: appends to a refused log allowed
        self.keys_dir = Path(keys_dir)
        self._passphrase = passphrase
        self._signers: dict[str, Signer] = {}
        self._crypto: PayloadCrypto | None = None
        self._sqlite = db.is_sqlite(engine)
        self.erase_wait_seconds = 30.0  # how long an erasure waits for readers of old row versions

    # --- opening --------------------------------------------------------------------------

    @classmethod
    def open(
        cls,
        data_dir: Path | str | None = None,
        database_url: str | None = None,
        *,
        passphrase: str | None = None,
        migrate: bool = True,
        database_read_url: str | None = None,
    ) -> "Ledger":
        """Open (and create or upgrade) the ledger. DATABASE_URL in the environment wins."""
        from rlhf_ledger.core.secret_env import env_secret  # NAME or NAME_FILE: URLs carry the database password

        database_url = database_url or env_secret("DATABASE_URL") or None
        database_read_url = database_read_url or env_secret("DATABASE_READ_URL") or None
        if data_dir is None:
            data_dir = os.environ.get("RLHF_LEDGER_HOME", "./data")
        data_dir = Path(data_dir)
        url = db.database_url(data_dir, database_url)
        db.secure_data_dir(data_dir, sqlite=url.startswith("sqlite"))
        engine = db.make_engine(url)
        if migrate:
            upgrade(engine)
        read_engine = db.make_engine(url, writer=False) if db.is_sqlite(engine) else None
        replica = None
        if database_read_url:
            if db.is_sqlite(engine):
                engine.dispose()
                raise LedgerError("DATABASE_READ_URL needs a PostgreSQL primary (DATABASE_URL); SQLite has no replicas",
                                  code="config_error")
            replica = db.make_engine(db.database_url(None, database_read_url), writer=False)
        guard = ForkGuard(PublishedCheckpoints(default_published_dir(data_dir)))
        return cls(engine, data_dir / "keys", passphrase=passphrase, read_engine=read_engine,
                   replica_engine=replica, fork_guard=guard)

    def close(self) -> None:
        self.engine.dispose()
        if self.read_engine is not self.engine:
            self.read_engine.dispose()
        if self.replica_engine is not None:
            self.replica_engine.dispose()

    def _get_passphrase(self) -> str:
        if self._passphrase is None:
            from rlhf_ledger.core.secret_env import env_secret

            value = env_secret(PASSPHRASE_ENV)
            if not value:
                raise LedgerError(f"the ledger's keys are encrypted: set {PASSPHRASE_ENV} (or {PASSPHRASE_ENV}_FILE, "
                                  "a file holding it)", code="no_passphrase")
            self._passphrase = value
        return self._passphrase

    def _log_key_path(self, log_id: str) -> Path:
        return self.keys_dir / log_key_file_name(log_id)

    def _legacy_log_key_path(self, log_id: str) -> Path:
        # Before log_key_file_name: '/' and ':' both became '_', so "a:b" and "a_b" shared a
        # file. Still read (the key's public key is checked against the log's), never written.
        return self.keys_dir / f"log-{log_id.replace('/', '_').replace(':', '_')}.key.json"

    def log_signer(self, log_id: str, public_key: bytes | None = None) -> Signer:
        """The log's signing key (decrypted once). Pass `public_key` when inside a transaction."""
        signer = self._signers.get(log_id)
        if signer is None:
            path = self._log_key_path(log_id)
            if not path.exists() and self._legacy_log_key_path(log_id).exists():
                path = self._legacy_log_key_path(log_id)
            signer = read_key_file(path, self._get_passphrase())
            if public_key is None:
                public_key = self.log_info(log_id).public_key
            if signer.public_key != public_key:
                raise LedgerError("log key file does not match the log's registered public key", where=log_id)
            self._signers[log_id] = signer
        return signer

    def _payload_crypto(self) -> PayloadCrypto:
        if self._crypto is None:
            self._crypto = PayloadCrypto(KeyRing(self.keys_dir, self._get_passphrase))
        return self._crypto

    # --- logs and producers ---------------------------------------------------------------

    def init_log(
        self,
        log_id: str,
        *,
        origin: str | None = None,
        checkpoint_every_events: int = 1000,
        checkpoint_every_seconds: float = 60.0,
    ) -> LogInfo:
        from rlhf_ledger.core.events import valid_id

        if not valid_id(log_id):
            raise EventError("log id must match [A-Za-z0-9][A-Za-z0-9._:/-]{0,127}", where="log_id")
        if origin is not None and not valid_origin(origin):
            raise EventError("origin must be 1 to 256 printable characters (no control characters) "
                             "and must not start with a space or an em dash", where="origin")
        if checkpoint_every_events < 1 or checkpoint_every_seconds <= 0:
            raise LedgerError("checkpoint intervals must be positive")
        origin = origin or default_origin(log_id)
        if origin == "rlhf-ledger.run-index/v1":  # the run-index note's tag (docs/run-index.md)
            raise LedgerError("this origin is reserved for run-index notes", where="origin")
        with self.engine.begin() as conn:
            if not self._sqlite:
                # Serialise concurrent creations of one log (SQLite's BEGIN IMMEDIATE already
                # does): the loser then sees the row and gets ConflictError, instead of finding
                # the winner's key file written and its row not yet committed.
                conn.execute(sa.text("SELECT pg_advisory_xact_lock(727275, hashtext(:k))"), {"k": log_id})
            if conn.execute(sa.select(db.logs.c.log_id).where(db.logs.c.log_id == log_id)).first():
                raise ConflictError("log already exists", where=log_id)
            path = self._log_key_path(log_id)
            signer = Signer.generate()
            if path.exists():  # left by a creation whose transaction failed (or a lost database): keep it aside
                path.rename(path.with_name(f"{path.name}.orphan-{int(time.time())}"))
            write_key_file(path, signer, self._get_passphrase(), label=f"log key for {origin}")
            conn.execute(
                db.logs.insert().values(
                    log_id=log_id,
                    origin=origin,
                    public_key=signer.public_key,
                    size=0,
                    checkpoint_every_events=checkpoint_every_events,
                    checkpoint_every_seconds=checkpoint_every_seconds,
                    created_at=time.time(),
                )
            )
        self._signers[log_id] = signer
        self.checkpoint(log_id)  # the signed empty tree: a starting point for consistency
        return self.log_info(log_id)

    def log_info(self, log_id: str, conn: Connection | None = None) -> LogInfo:
        q = sa.select(db.logs).where(db.logs.c.log_id == log_id)
        rows = conn.execute(q).all() if conn is not None else self._read(q)
        row = rows[0] if rows else None
        if row is None:
            raise NotFoundError("no such log", where=f"log {log_id!r}")
        return LogInfo(row.log_id, row.origin, row.public_key, row.size, row.checkpoint_every_events, row.checkpoint_every_seconds)

    def list_logs(self) -> list[LogInfo]:
        return [self.log_info(r.log_id) for r in self._read(sa.select(db.logs.c.log_id).order_by(db.logs.c.log_id))]

    def register_producer(self, log_id: str, public_key: bytes, label: str = "") -> str:
        """Register a producer key: append its `producer.register` key event (signed by the log
        key) and cache it in `producers`, in one transaction (docs/keys.md). Idempotent for an
        active key; a revoked key cannot come back."""
        if len(public_key) != 32:
            raise EventError("an Ed25519 public key is 32 bytes", where="public_key")
        kid = key_id(public_key)
        p = db.producers.c
        self._migrate_keys_first(log_id)

        def decide(conn: Connection) -> dict | None:
            row = conn.execute(sa.select(db.producers).where(p.log_id == log_id, p.key_id == kid)).first()
            if row is None:
                return kev.register_body(public_key)
            if row.status == "revoked":
                raise RevokedKeyError("this key was revoked and cannot be registered again", where=kid)
            return None

        def cache(conn: Connection, r: AppendResult) -> None:
            conn.execute(db.producers.insert().values(
                log_id=log_id, key_id=kid, public_key=public_key, label=label, status="active",
                registered_at=time.time(), registered_idx=r.index))

        self._append_admin(log_id, kev.KEYS_RUN, kev.REGISTER, decide, cache)
        return kid

    def revoke_producer(self, log_id: str, kid: str) -> None:
        """Revoke a producer key: append its `producer.revoke` key event and cache it, in one
        transaction; its events after that position are refused (docs/keys.md)."""
        p = db.producers.c
        self._migrate_keys_first(log_id)

        def decide(conn: Connection) -> dict | None:
            row = conn.execute(sa.select(db.producers).where(p.log_id == log_id, p.key_id == kid)).first()
            if row is None:
                raise UnknownKeyError("no such producer key in this log", where=kid)
            if row.status == "revoked":
                return None
            return kev.revoke_body(kid)

        def cache(conn: Connection, r: AppendResult) -> None:
            conn.execute(db.producers.update().where(p.log_id == log_id, p.key_id == kid)
                         .values(status="revoked", revoked_at=time.time(), revoked_idx=r.index))

        self._append_admin(log_id, kev.KEYS_RUN, kev.REVOKE, decide, cache)

    def _migrate_keys_first(self, log_id: str) -> None:
        """Legacy registrations must precede every other key event (docs/keys.md): write them
        before a new registration or a revocation if the log still has producers without them."""
        if self._read(sa.select(db.producers.c.key_id).where(
                db.producers.c.log_id == log_id, db.producers.c.registered_idx.is_(None)).limit(1)):
            self.migrate_keys(log_id)

    def migrate_keys(self, log_id: str) -> int:
        """Write key events for producers registered before key events existed (docs/keys.md,
        "Migration of existing logs"); return how many key events were appended. Idempotent."""
        p = db.producers.c
        written = 0
        rows = self._read(sa.select(db.producers).where(p.log_id == log_id, p.registered_idx.is_(None))
                          .order_by(p.registered_at, p.key_id))
        for row in rows:
            kid = row.key_id

            def decide_reg(conn: Connection, kid: str = kid) -> dict | None:
                cur = conn.execute(sa.select(db.producers).where(p.log_id == log_id, p.key_id == kid)).first()
                if cur is None or cur.registered_idx is not None:
                    return None
                return kev.register_body(bytes(cur.public_key), legacy=True)

            def cache_reg(conn: Connection, r: AppendResult, kid: str = kid) -> None:
                conn.execute(db.producers.update().where(p.log_id == log_id, p.key_id == kid).values(registered_idx=kev.LEGACY))

            if self._append_admin(log_id, kev.KEYS_RUN, kev.REGISTER, decide_reg, cache_reg) is not None:
                written += 1
        for row in self._read(sa.select(db.producers).where(p.log_id == log_id, p.status == "revoked",
                                                              p.revoked_idx.is_(None)).order_by(p.key_id)):
            kid = row.key_id

            def decide_rev(conn: Connection, kid: str = kid) -> dict | None:
                cur = conn.execute(sa.select(db.producers).where(p.log_id == log_id, p.key_id == kid)).first()
                return kev.revoke_body(kid) if cur is not None and cur.revoked_idx is None else None

            def cache_rev(conn: Connection, r: AppendResult, kid: str = kid) -> None:
                conn.execute(db.producers.update().where(p.log_id == log_id, p.key_id == kid).values(revoked_idx=r.index))

            if self._append_admin(log_id, kev.KEYS_RUN, kev.REVOKE, decide_rev, cache_rev) is not None:
                written += 1
        return written

    def _append_admin(
        self,
        log_id: str,
        run_id: str,
        type_: str,
        decide: Callable[[Connection], dict | None],
        after: Callable[[Connection, AppendResult], None],
    ) -> AppendResult | None:
        """Append one record of the log itself (a reserved run, signed by the log key).

        Under the log's write lock: `decide` returns the body (or None: nothing to write), the
        event continues the log key's chain in `run_id`, and `after` updates what caches it in
        the same transaction, so nothing can be appended between the record and its effect.
        """
        assert kev.is_reserved_run(run_id)
        self.log_info(log_id)  # NotFoundError before asking for the passphrase
        with self.engine.begin() as conn:
            log = self._lock_log(conn, log_id)
            body = decide(conn)
            if body is None:
                return None
            result, signed = self._append_admin_in(conn, log_id, log, run_id, type_, body)
            after(conn, result)
        self._published(log_id, log.public_key, signed)
        return result

    def _append_admin_in(self, conn: Connection, log_id: str, log: sa.Row, run_id: str, type_: str,
                         body: dict) -> tuple[AppendResult, Checkpoint | None]:
        """One record of the log itself inside the caller's transaction, which already holds the
        log's write lock (`log` is its locked row): what _append_admin does between `decide` and
        `after`, also for callers that write records to several logs in one transaction (a
        subject erasure, ledger/erasure.py). Returns the checkpoint the size policy signed, if
        any: the caller passes it to _published once the transaction commits."""
        assert kev.is_reserved_run(run_id)
        signer = self.log_signer(log_id, log.public_key)
        h = db.heads.c
        head = conn.execute(sa.select(h.seq, h.event_hash).where(
            h.log_id == log_id, h.run_id == run_id, h.producer == signer.key_id)).first()
        event = make_event(log_id=log_id, run_id=run_id, type=type_, producer=signer.key_id,
                           seq=0 if head is None else head.seq + 1, prev=None if head is None else head.event_hash,
                           body=body)
        parsed = parse_envelope(sign_event(event, signer), where="log record")
        (result,), signed = self._append_in(conn, log_id, log, [parsed], admin=True)
        return result, signed

    def producers(self, log_id: str) -> list[dict]:
        rows = self._read(sa.select(db.producers).where(db.producers.c.log_id == log_id).order_by(db.producers.c.registered_at))
        return [
            {
                "key_id": r.key_id,
                "public_key": base64.b64encode(r.public_key).decode(),
                "label": r.label,
                "status": r.status,
                "registered_at": r.registered_at,
                "revoked_at": r.revoked_at,
                "registered_idx": r.registered_idx,
                "revoked_idx": r.revoked_idx,
            }
            for r in rows
        ]

    # --- appending ------------------------------------------------------------------------

    def append(
        self,
        envelopes: Sequence[Any],
        *,
        log_id: str | None = None,
        executor: Executor | None = None,
    ) -> list[AppendResult]:
        """Check and append a batch atomically; return each event's position.

        Raises BatchRejected (with every refused event and why) and stores nothing when any
        event is refused. `executor` (threads or processes) spreads parsing and signature
        checks; the database work stays on the calling thread.
        """
        return self._commit_prepared(self._prepare(envelopes, log_id, executor)())

    def append_stream(
        self,
        batches: Iterable[Sequence[Any]],
        *,
        log_id: str | None = None,
        executor: Executor | None = None,
        prefetch: int = 2,
    ) -> Iterator[list[AppendResult]]:
        """Append batches in order, checking the next `prefetch` batches in `executor` while
        the current one commits.

        Yields each batch's results after its commit; stops at the first refused batch
        (BatchRejected), leaving the batches before it committed.
        """
        from collections import deque

        pending: deque[Callable[[], tuple[str | None, list]]] = deque()
        for batch in batches:
            pending.append(self._prepare(batch, log_id, executor))
            if len(pending) > max(0, prefetch):
                yield self._commit_prepared(pending.popleft()())
        while pending:
            yield self._commit_prepared(pending.popleft()())

    def _prepare(
        self, envelopes: Sequence[Any], log_id: str | None, executor: Executor | None
    ) -> Callable[[], tuple[str | None, list]]:
        """Start parsing and verifying a batch; the returned call waits for the outcome."""
        if len(envelopes) > MAX_BATCH:
            raise EventError(f"a batch holds at most {MAX_BATCH} events, got {len(envelopes)}", where="events")
        target = log_id or _claimed_log_id(envelopes)
        keys = self._producer_keys(target, _claimed_producers(envelopes)) if target else {}
        if executor is None or len(envelopes) < 64:
            done = _prepare_chunk(envelopes, 0, target, keys)
            return lambda: (target, done)
        if isinstance(executor, ThreadPoolExecutor):
            # Threads: parse here (it needs the GIL anyway); only the GIL-free signature loop
            # goes to the pool, so nothing is pickled. One part per thread: a thread that
            # finishes a part needs the GIL back, and may wait a switch interval (5 ms) for it
            # while this thread runs Python, so fewer, larger parts keep the threads busy.
            items = _parse_chunk(envelopes, 0, target, keys)
            ks, ms, ss = _signature_inputs(items, keys)
            threads = max(1, getattr(executor, "_max_workers", 1))
            n = max(32, -(-len(ks) // threads))
            parts = [executor.submit(sigverify.verify_many, ks[j : j + n], ms[j : j + n], ss[j : j + n])
                     for j in range(0, len(ks), n)]

            def wait() -> tuple[str | None, list]:
                _apply_verdicts(items, 0, [v for f in parts for v in f.result()])
                return target, items

            return wait
        n = max(32, len(envelopes) // 8)
        futures = [executor.submit(_prepare_chunk, envelopes[j : j + n], j, target, keys) for j in range(0, len(envelopes), n)]
        return lambda: (target, [x for f in futures for x in f.result()])

    def _commit_prepared(self, prepared: tuple[str | None, list]) -> list[AppendResult]:
        target, items = prepared
        if not items:
            return []
        errors = [(i, x) for i, x in enumerate(items) if isinstance(x, LedgerError)]
        if errors:
            raise BatchRejected(errors)
        assert target is not None
        for attempt in range(5):
            try:
                return self._append_locked(target, items)
            except sa.exc.OperationalError as e:  # pragma: no cover - depends on lock timing
                if "deadlock" not in str(e).lower() or attempt == 4:
                    raise
        raise AssertionError("unreachable")

    def _producer_keys(self, log_id: str, kids: set[str]) -> dict[str, tuple[bytes, str]]:
        rows = self._read(
            sa.select(db.producers.c.key_id, db.producers.c.public_key, db.producers.c.status).where(
                db.producers.c.log_id == log_id, db.producers.c.key_id.in_(sorted(kids))
            )
        )
        return {r.key_id: (r.public_key, r.status) for r in rows}

    def _lock_log(self, conn: Connection, log_id: str) -> sa.Row:
        q = sa.select(db.logs).where(db.logs.c.log_id == log_id)
        if not self._sqlite:
            q = q.with_for_update()
        row = conn.execute(q).first()
        if row is None:
            raise NotFoundError("no such log", where=f"log {log_id!r}")
        return row

    def _append_locked(self, log_id: str, events: list[ParsedEvent]) -> list[AppendResult]:
        with self.engine.begin() as conn:
            log = self._lock_log(conn, log_id)
            results, signed = self._append_in(conn, log_id, log, events)
        self._published(log_id, log.public_key, signed)
        return results

    def _published(self, log_id: str, public_key: bytes, signed: Checkpoint | None) -> None:
        """A checkpoint an append signed (the size policy) is served as soon as the append
        commits, so it is recorded as published then, not at the next sweep: a restore in
        between could otherwise sign a second history under it (ledger/fork_guard.py)."""
        if signed is not None and self.fork_guard is not None:
            self.fork_guard.record(log_id, public_key, signed.size, signed.root, signed.note)

    def _append_in(self, conn: Connection, log_id: str, log: sa.Row, events: list[ParsedEvent], *,
                   admin: bool = False) -> tuple[list[AppendResult], Checkpoint | None]:
        """The checks and writes of an append, inside the caller's transaction that holds the
        log's write lock; returns each event's position and the checkpoint the size policy
        signed, if any (the caller records it as published once the transaction commits).
        `admin`: the events are the log's own records (reserved runs, signed by the log key,
        built by _append_admin), not submissions."""
        if self.fork_guard is not None and not self.recovering and (why := self.fork_guard.refused(log_id)):
            raise SigningRefused(why, where=log_id)  # an append now would make the fork permanent
        size = log.size
        signed = None
        # Revocation may have happened since the signature check: re-read inside the lock.
        status = {
            r.key_id: r.status
            for r in conn.execute(
                sa.select(db.producers.c.key_id, db.producers.c.status).where(
                    db.producers.c.log_id == log_id, db.producers.c.key_id.in_(sorted({p.producer for p in events}))
                )
            )
        }
        errors: list[tuple[int, LedgerError]] = []
        pairs = sorted({(p.event["run_id"], p.producer) for p in events})
        heads: dict[tuple[str, str], tuple[int, str]] = {}
        for j in range(0, len(pairs), 400):
            for r in conn.execute(
                sa.select(db.heads.c.run_id, db.heads.c.producer, db.heads.c.seq, db.heads.c.event_hash).where(
                    db.heads.c.log_id == log_id,
                    sa.tuple_(db.heads.c.run_id, db.heads.c.producer).in_(pairs[j : j + 400]),
                )
            ):
                heads[(r.run_id, r.producer)] = (r.seq, r.event_hash)
        # Resubmissions: a chain is stored without gaps up to its head, so an event at or below
        # its producer's head is either the stored event at that seq (answered with its
        # position) or a fork. Only those are looked up, by (run, producer, seq); new events,
        # the usual case, cost no lookup at all.
        olds = sorted({
            (p.event["run_id"], p.producer, p.event["seq"]) for p in events
            if (h := heads.get((p.event["run_id"], p.producer))) is not None and p.event["seq"] <= h[0]
        })
        existing: dict[str, tuple[int, bytes]] = {}
        e = db.entries.c
        for j in range(0, len(olds), 300):
            for r in conn.execute(
                sa.select(e.event_id, e.idx, e.leaf_hash).where(
                    e.log_id == log_id, sa.tuple_(e.run_id, e.producer, e.seq).in_(olds[j : j + 300])
                )
            ):
                existing[r.event_id] = (r.idx, r.leaf_hash)

        # Runs closed by a run.end (stored, or earlier in this batch) take no further event.
        runs = sorted({p.event["run_id"] for p in events})
        ended: dict[str, int] = {}
        for j in range(0, len(runs), 400):
            for r in conn.execute(
                sa.select(db.ended_runs.c.run_id, db.ended_runs.c.end_idx).where(
                    db.ended_runs.c.log_id == log_id, db.ended_runs.c.run_id.in_(runs[j : j + 400])
                )
            ):
                ended[r.run_id] = r.end_idx
        newly_ended: dict[str, int] = {}

        results: list[AppendResult | None] = []
        new: list[tuple[int, ParsedEvent]] = []
        changed_heads: dict[tuple[str, str], tuple[int, str]] = {}
        in_batch: dict[str, AppendResult] = {}
        log_key_id = key_id(log.public_key)
        for i, p in enumerate(events):
            if admin:
                if p.producer != log_key_id or not kev.is_reserved_run(p.event["run_id"]):
                    raise LedgerError("a log record must be signed by the log key in a reserved run", where=log_id)
            elif status.get(p.producer) != "active":
                errors.append((i, RevokedKeyError("producer key was revoked", where=f"events[{i}].event.producer")))
                results.append(None)
                continue
            if p.event_id in existing:
                idx, lh = existing[p.event_id]
                results.append(AppendResult(idx, p.event_id, lh, True))
                continue
            if p.event_id in in_batch:
                first = in_batch[p.event_id]
                results.append(AppendResult(first.index, first.event_id, first.leaf_hash, True))
                continue
            key = (p.event["run_id"], p.producer)
            end_idx = ended.get(key[0], newly_ended.get(key[0]))
            if end_idx is not None:
                errors.append((i, RunEndedError(
                    f"run {key[0]!r} was closed by its run.end at index {end_idx}; the log accepts no later "
                    "event of that run (start a new run with a new run id)", where=f"events[{i}].event.run_id")))
                results.append(None)
                continue
            seq, prev = p.event["seq"], p.event["prev"]
            head = changed_heads.get(key) or heads.get(key)
            where = f"events[{i}].event.seq"
            if head is None:
                if seq != 0:
                    errors.append((i, SequenceError(f"producer's first event in run {key[0]!r} must have seq 0, got {seq}", where=where)))
                    results.append(None)
                    continue
            else:
                last_seq, last_hash = head
                if seq <= last_seq:
                    errors.append((i, ConflictError(f"seq {seq} is already used by another event of this producer in this run (replay or fork)", where=where)))
                    results.append(None)
                    continue
                if seq != last_seq + 1:
                    errors.append((i, SequenceError(f"sequence gap: expected seq {last_seq + 1}, got {seq}", where=where)))
                    results.append(None)
                    continue
                if prev != last_hash:
                    errors.append((i, SequenceError("prev is not the hash of the producer's previous event", where=f"events[{i}].event.prev")))
                    results.append(None)
                    continue
            changed_heads[key] = (seq, p.event_id)
            r = AppendResult(size + len(new), p.event_id, p.leaf_hash, False)
            in_batch[p.event_id] = r
            new.append((r.index, p))
            results.append(r)
            if p.event["type"] == "run.end":
                newly_ended[key[0]] = r.index
        if errors:
            raise BatchRejected(errors)
        if new:
            self._store_new(conn, log_id, size, new, changed_heads, heads)
            if newly_ended:
                conn.execute(db.ended_runs.insert(), [
                    {"log_id": log_id, "run_id": run, "end_idx": idx} for run, idx in sorted(newly_ended.items())])
            new_size = size + len(new)
            conn.execute(db.logs.update().where(db.logs.c.log_id == log_id).values(size=new_size))
            if new_size - self._last_checkpoint_size(conn, log_id) >= log.checkpoint_every_events:
                signed = self._issue_checkpoint(conn, log_id, log.origin, new_size, log.public_key, optional=True)
        return results, signed  # type: ignore[return-value]

    def _store_new(
        self,
        conn: Connection,
        log_id: str,
        size: int,
        new: list[tuple[int, ParsedEvent]],
        changed_heads: dict[tuple[str, str], tuple[int, str]],
        old_heads: dict[tuple[str, str], tuple[int, str]],
    ) -> None:
        now = time.time()
        # The driver's executemany directly: SQLAlchemy's per-row parameter processing costs
        # more than the inserts themselves on this hot path.
        self._insert_many(
            conn,
            db.entries,
            ("log_id", "idx", "event_id", "event_key", "leaf_hash", "entry", "run_id", "producer", "seq", "type", "ts", "appended_at"),
            [
                (log_id, idx, p.event_id, db.event_key(p.event_id), p.leaf_hash, p.entry, p.event["run_id"], p.producer,
                 p.event["seq"], p.event["type"], p.event["ts"], now)
                for idx, p in new
            ],
        )
        new_nodes = merkle.append_many(size, [p.leaf_hash for _, p in new], self._node_getter(conn, log_id))
        # Level 0 is entries.leaf_hash already; only inner nodes go to `nodes`.
        self._insert_many(
            conn, db.nodes, ("log_id", "level", "idx", "hash"), [(log_id, lv, ix, h) for lv, ix, h in new_nodes if lv]
        )
        updates = [
            {"k_log": log_id, "k_run": run, "k_producer": prod, "seq": seq, "event_hash": eh}
            for (run, prod), (seq, eh) in changed_heads.items()
            if (run, prod) in old_heads
        ]
        inserts = [
            {"log_id": log_id, "run_id": run, "producer": prod, "seq": seq, "event_hash": eh}
            for (run, prod), (seq, eh) in changed_heads.items()
            if (run, prod) not in old_heads
        ]
        if inserts:
            conn.execute(db.heads.insert(), inserts)
        if updates:
            h = db.heads.c
            conn.execute(
                db.heads.update()
                .where(h.log_id == sa.bindparam("k_log"), h.run_id == sa.bindparam("k_run"), h.producer == sa.bindparam("k_producer"))
                .values(seq=sa.bindparam("seq"), event_hash=sa.bindparam("event_hash")),
                updates,
            )
        with_openings = [(idx, p) for idx, p in new if p.openings]
        if with_openings:
            self._store_payloads(conn, log_id, with_openings)

    @staticmethod
    def _insert_many(conn: Connection, table: sa.Table, cols: tuple[str, ...], rows: list[tuple]) -> None:
        if not rows:
            return
        mark = "?" if conn.dialect.paramstyle == "qmark" else "%s"
        sql = f"INSERT INTO {table.name} ({', '.join(cols)}) VALUES ({', '.join([mark] * len(cols))})"
        conn.exec_driver_sql(sql, rows)

    def _store_payloads(self, conn: Connection, log_id: str, items: list[tuple[int, ParsedEvent]]) -> None:
        """Seal each entry's openings (v2, docs/storage.md): under its run's key, and those that
        name subjects also under their subject keys; record which opening names whom."""
        crypto = self._payload_crypto()
        keys: dict[str, bytes] = {}
        people = sorted({s for _, p in items if p.subjects for names in p.subjects.values() for s in names})
        subject_keys = self._subject_keys(conn, crypto, people) if people else {}
        rows, links = [], []
        for idx, p in items:
            run = p.event["run_id"]
            if run not in keys:
                keys[run] = self._run_key(conn, crypto, log_id, run)
            subjects = p.subjects or {}
            nonce, ct, members = crypto.seal_entry(keys[run], p.openings or {}, subjects, subject_keys, log_id, idx, p.event_id)
            rows.append((log_id, idx, run, nonce, ct, members))
            for m, names in subjects.items():
                if all(subject_keys[s] is not None for s in names):  # an erased subject's opening is not stored
                    links += [(s, log_id, idx, m, run) for s in names]
        self._insert_many(conn, db.payloads, ("log_id", "idx", "run_id", "nonce", "ciphertext", "members"), rows)
        self._insert_many(conn, db.subject_openings, ("subject", "log_id", "idx", "member", "run_id"), links)

    def _subject_keys(self, conn: Connection, crypto: PayloadCrypto, subjects: list[str]) -> dict[str, bytes | None]:
        """Each subject's data key (None: erased), made for subjects seen for the first time.

        PostgreSQL: rows are read FOR SHARE, so a subject erasure (which updates the row) cannot
        commit between this read and the append's commit; a new key is made under the advisory
        lock that KEK rotation takes, after reading again, so two logs creating the same
        subject's key at once end with one key (docs/storage.md)."""
        sk = db.subject_keys.c
        out: dict[str, bytes | None] = {}

        def fetch(names: list[str]) -> None:
            files = crypto.ring.files()  # one listing for the batch's unwraps
            for j in range(0, len(names), 400):
                q = sa.select(sk.subject, sk.wrapped_key).where(sk.subject.in_(names[j : j + 400]))
                if not self._sqlite:
                    q = q.with_for_update(read=True)
                for r in conn.execute(q):
                    out[r.subject] = None if r.wrapped_key is None else crypto.unwrap_subject(r.wrapped_key, r.subject, files)

        fetch(subjects)
        missing = [s for s in subjects if s not in out]
        if missing:
            if not self._sqlite:  # wrap under the current KEK, never one an erasure is replacing
                conn.execute(sa.text("SELECT pg_advisory_xact_lock(727276, 1)"))
                fetch(missing)
            new = []
            for s in missing:
                if s not in out:
                    key, wrapped = crypto.new_subject_key(s)
                    new.append({"subject": s, "wrapped_key": wrapped, "created_at": time.time()})
                    out[s] = key
            if new:
                conn.execute(db.subject_keys.insert(), new)
        return out

    def _run_key(self, conn: Connection, crypto: PayloadCrypto, log_id: str, run_id: str) -> bytes:
        row = conn.execute(
            sa.select(db.run_keys).where(db.run_keys.c.log_id == log_id, db.run_keys.c.run_id == run_id)
        ).first()
        if row is not None:
            if row.wrapped_key is None:
                raise PayloadError("run was erased: its data key is destroyed and it takes no new payloads", where=run_id)
            return crypto.unwrap(row.wrapped_key, log_id, run_id)
        if not self._sqlite:  # wrap under the current KEK, never one an erasure is replacing
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(727276, 1)"))
        key, wrapped = crypto.new_run_key(log_id, run_id)
        conn.execute(db.run_keys.insert().values(log_id=log_id, run_id=run_id, wrapped_key=wrapped, created_at=time.time()))
        return key

    # --- Merkle reads ---------------------------------------------------------------------

    def _node_getter(self, conn: Connection, log_id: str) -> merkle.NodeGetter:
        """Point lookups of stored nodes (leaves from `entries`, inner nodes from `nodes`).

        A UNION ALL of (log_id, level, idx) equality lookups: both SQLite and PostgreSQL answer
        each part from the primary-key index, whereas SQLite scans the whole log for a
        row-value IN list.
        """
        mark = "?" if conn.dialect.paramstyle == "qmark" else "%s"
        inner = f"SELECT level, idx, hash FROM nodes WHERE log_id = {mark} AND level = {mark} AND idx = {mark}"
        # Leaves (level 0) are the entries' leaf hashes; the constant level keeps one row shape.
        leaf = f"SELECT 0, idx, leaf_hash FROM entries WHERE log_id = {mark} AND {mark} = 0 AND idx = {mark}"

        def get(keys: list[merkle.NodeKey]) -> dict[merkle.NodeKey, bytes]:
            out: dict[merkle.NodeKey, bytes] = {}
            for j in range(0, len(keys), 200):  # SQLite allows 500 terms in a compound SELECT
                part = keys[j : j + 200]
                sql = " UNION ALL ".join(leaf if lv == 0 else inner for lv, _ in part)
                params = tuple(x for lv, ix in part for x in (log_id, lv, ix))
                for lv, ix, h in conn.exec_driver_sql(sql, params):
                    out[(lv, ix)] = bytes(h)
            return out

        return get

    def _replica(self) -> Engine | None:
        """The read replica, unless it failed within the last few seconds (then: the primary)."""
        if self.replica_engine is None or time.monotonic() < self._replica_down_until:
            return None
        return self.replica_engine

    def _replica_failed(self) -> None:
        self.replica_fallbacks += 1
        self._replica_down_until = time.monotonic() + 5.0  # no connect timeout per request meanwhile

    def _read(self, q: Any) -> list[sa.Row]:
        if (replica := self._replica()) is not None:
            try:
                with replica.connect() as conn:
                    rows = conn.execute(q).all()
                    conn.rollback()
            except sa.exc.DBAPIError:
                self._replica_failed()
            else:
                if rows:
                    return rows
                self.replica_fallbacks += 1  # not replayed yet (or absent): the primary decides
        with self.read_engine.connect() as conn:
            rows = conn.execute(q).all()
            conn.rollback()
        return rows

    def _with_read(self, fn: Callable[[Connection], Any]) -> Any:
        if (replica := self._replica()) is not None:
            try:
                with replica.connect() as conn:
                    try:
                        return fn(conn)
                    finally:
                        conn.rollback()
            except (NotFoundError, ProofError):
                # The replica's snapshot is a prefix of the primary's history: a size or row it
                # has not replayed yet is answered by the primary, never approximated.
                self.replica_fallbacks += 1
            except sa.exc.DBAPIError:
                self._replica_failed()
        with self.read_engine.connect() as conn:
            try:
                return fn(conn)
            finally:
                conn.rollback()

    def stored_nodes(self, log_id: str, keys: list[merkle.NodeKey]) -> dict[merkle.NodeKey, bytes]:
        """Stored tree nodes by (level, index); absent keys are left out."""
        return self._with_read(lambda conn: self._node_getter(conn, log_id)(list(keys)))

    def size(self, log_id: str) -> int:
        return self.log_info(log_id).size

    def root(self, log_id: str, size: int | None = None) -> bytes:
        def run(conn: Connection) -> bytes:
            cur = self.log_info(log_id, conn).size
            n = cur if size is None else size
            if not 0 <= n <= cur:
                raise ProofError(f"tree size {n} is beyond the log size {cur}", where=log_id)
            return merkle.root(n, self._node_getter(conn, log_id))

        return self._with_read(run)

    def inclusion_proof(self, log_id: str, index: int, size: int | None = None) -> tuple[int, list[bytes]]:
        """Proof that entry `index` is in the tree of `size` (default: latest checkpoint's size)."""

        def run(conn: Connection) -> tuple[int, list[bytes]]:
            n = size if size is not None else self._last_checkpoint_size(conn, log_id)
            cur = self.log_info(log_id, conn).size
            if not 0 <= index < n <= cur:
                raise ProofError(f"need 0 <= index < size <= {cur}; got index {index}, size {n}", where=log_id)
            return n, merkle.inclusion_proof(index, n, self._node_getter(conn, log_id))

        return self._with_read(run)

    def consistency_proof(self, log_id: str, m: int, n: int) -> list[bytes]:
        def run(conn: Connection) -> list[bytes]:
            cur = self.log_info(log_id, conn).size
            if not 0 <= m <= n <= cur:
                raise ProofError(f"need 0 <= first <= second <= {cur}; got {m}, {n}", where=log_id)
            return merkle.consistency_proof(m, n, self._node_getter(conn, log_id))

        return self._with_read(run)

    # --- checkpoints ----------------------------------------------------------------------

    def _last_checkpoint_size(self, conn: Connection, log_id: str) -> int:
        v = conn.execute(sa.select(sa.func.max(db.checkpoints.c.size)).where(db.checkpoints.c.log_id == log_id)).scalar()
        return -1 if v is None else int(v)

    def _issue_checkpoint(
        self, conn: Connection, log_id: str, origin: str, size: int, public_key: bytes, *, optional: bool = False
    ) -> Checkpoint | None:
        try:
            signer = self.log_signer(log_id, public_key)
        except LedgerError:
            if optional:  # appends never fail for want of the log key; checkpoints wait for it
                return None
            raise
        get = self._node_getter(conn, log_id)
        root = merkle.root(size, get)
        last = conn.execute(
            sa.select(db.checkpoints).where(db.checkpoints.c.log_id == log_id).order_by(db.checkpoints.c.size.desc()).limit(1)
        ).first()
        if last is not None:
            if last.size == size:
                return parse_and_verify(last.note, origin, public_key)
            if last.size > size:
                raise ProofError(f"a checkpoint for size {last.size} exists; refusing to sign a smaller tree", where=log_id)
            # C2SP witness rule: never sign a tree that does not extend the last signed one.
            proof = merkle.consistency_proof(last.size, size, get)
            if not merkle.verify_consistency(last.size, size, proof, last.root, root):
                raise ProofError(
                    f"stored tree at size {size} is not consistent with signed checkpoint {last.size}: storage is corrupt",
                    where=log_id,
                )
        if self.fork_guard is not None:
            # The same rule against what a restore cannot roll back (published record, chain).
            if optional and self.recovering:
                return None  # mid-recovery the tree is still short of the published size: sign later
            self.fork_guard.before_sign(log_id, origin, public_key, size, get)
        note = sign_checkpoint(origin, size, root, signer)
        conn.execute(db.checkpoints.insert().values(log_id=log_id, size=size, root=root, note=note, created_at=time.time()))
        return Checkpoint(origin, size, root, note)

    def checkpoint(self, log_id: str) -> Checkpoint:
        """Sign a checkpoint for the current size now (or return the one that exists)."""
        with self.engine.begin() as conn:
            log = self._lock_log(conn, log_id)
            cp = self._issue_checkpoint(conn, log_id, log.origin, log.size, log.public_key)
        assert cp is not None
        if self.fork_guard is not None:  # after the commit: only a committed checkpoint is published
            self.fork_guard.record(log_id, log.public_key, cp.size, cp.root, cp.note)
        return cp

    def fork_check(self, log_id: str) -> str | None:
        """Compare the log with its published references (ledger/fork_guard.py) on the primary.

        Returns why the log refuses to sign, or None; when consistent, the newest checkpoint in
        the database (e.g. one signed by an append) is recorded as published.
        """
        if self.fork_guard is None:
            return None
        with self.engine.connect() as conn:
            try:
                info = self.log_info(log_id, conn)
                why = self.fork_guard.check(log_id, info.origin, info.public_key, info.size, self._node_getter(conn, log_id))
                last = None if why else conn.execute(
                    sa.select(db.checkpoints).where(db.checkpoints.c.log_id == log_id)
                    .order_by(db.checkpoints.c.size.desc()).limit(1)
                ).first()
            finally:
                conn.rollback()
        if last is not None:
            self.fork_guard.record(log_id, info.public_key, last.size, last.root, last.note)
        return why

    def maybe_checkpoint(self, log_id: str, now: float | None = None) -> Checkpoint | None:
        """Issue a checkpoint if the time or size policy says one is due."""
        now = time.time() if now is None else now
        if self.fork_check(log_id) is not None:
            return None  # refused: nothing is signed (the reason is logged and in /readyz)
        info = self.log_info(log_id)
        last = self.latest_checkpoint(log_id)
        if last is not None and last.size == info.size:
            return None
        created = self._checkpoint_created(log_id, last.size) if last else 0.0
        if last is None or info.size - last.size >= info.checkpoint_every_events or now - created >= info.checkpoint_every_seconds:
            return self.checkpoint(log_id)
        return None

    def _checkpoint_created(self, log_id: str, size: int) -> float:
        rows = self._read(
            sa.select(db.checkpoints.c.created_at).where(db.checkpoints.c.log_id == log_id, db.checkpoints.c.size == size)
        )
        return rows[0].created_at if rows else 0.0

    def latest_checkpoint(self, log_id: str) -> Checkpoint | None:
        rows = self._read(
            sa.select(db.checkpoints).where(db.checkpoints.c.log_id == log_id).order_by(db.checkpoints.c.size.desc()).limit(1)
        )
        return Checkpoint(self.log_info(log_id).origin, rows[0].size, rows[0].root, rows[0].note) if rows else None

    def get_checkpoint(self, log_id: str, size: int) -> Checkpoint:
        rows = self._read(sa.select(db.checkpoints).where(db.checkpoints.c.log_id == log_id, db.checkpoints.c.size == size))
        if not rows:
            raise NotFoundError(f"no checkpoint of size {size}", where=f"log {log_id!r}")
        return Checkpoint(self.log_info(log_id).origin, rows[0].size, rows[0].root, rows[0].note)

    def list_checkpoints(self, log_id: str, *, after: int = -1, limit: int = 1000) -> list[Checkpoint]:
        origin = self.log_info(log_id).origin
        rows = self._read(
            sa.select(db.checkpoints)
            .where(db.checkpoints.c.log_id == log_id, db.checkpoints.c.size > after)
            .order_by(db.checkpoints.c.size)
            .limit(limit)
        )
        return [Checkpoint(origin, r.size, r.root, r.note) for r in rows]

    # --- entries --------------------------------------------------------------------------

    def get_entry(self, log_id: str, index: int) -> sa.Row:
        rows = self._read(sa.select(db.entries).where(db.entries.c.log_id == log_id, db.entries.c.idx == index))
        if not rows:
            raise NotFoundError(f"no entry at index {index}", where=f"log {log_id!r}")
        return rows[0]

    def find_event(self, log_id: str, event_id: str) -> sa.Row:
        try:
            key = db.event_key(event_id)
        except ValueError:
            raise NotFoundError(f"no event with id {event_id[:80]} (an event id is 64 hex digits)", where=f"log {log_id!r}") from None
        e = db.entries.c
        rows = self._read(sa.select(db.entries).where(e.log_id == log_id, e.event_key == key, e.event_id == event_id))
        if not rows:
            raise NotFoundError(f"no event with id {event_id}", where=f"log {log_id!r}")
        return rows[0]

    def iter_entries(
        self, log_id: str, start: int = 0, end: int | None = None, *, run_id: str | None = None, page: int = 5000
    ) -> Iterator[sa.Row]:
        """Entries in index order, read page by page (memory does not grow with the log)."""
        e = db.entries.c
        pos = start
        while True:
            q = sa.select(db.entries).where(e.log_id == log_id, e.idx >= pos)
            if end is not None:
                q = q.where(e.idx < end)
            if run_id is not None:
                q = q.where(e.run_id == run_id)
            rows = self._read(q.order_by(e.idx).limit(page))
            yield from rows
            # From a replica a short page may only mean "not replayed yet": the next read
            # (empty there) goes to the primary.
            if len(rows) < page and (self.replica_engine is None or not rows):
                return
            pos = rows[-1].idx + 1

    def iter_leaf_hashes(self, log_id: str, start: int, end: int, page: int = 20000) -> Iterator[tuple[int, bytes]]:
        e = db.entries.c
        pos = start
        while pos < end:
            rows = self._read(
                sa.select(e.idx, e.leaf_hash).where(e.log_id == log_id, e.idx >= pos, e.idx < end).order_by(e.idx).limit(page)
            )
            if not rows:
                return
            for r in rows:
                yield r.idx, r.leaf_hash
            pos = rows[-1].idx + 1

    def read_openings(self, log_id: str, index: int) -> Opened | None:
        """An entry's openings as far as they still read, and which are erased (member -> "run"
        or "subject"); None if the entry has no stored openings (docs/storage.md)."""
        rows = self._read(sa.select(db.payloads).where(db.payloads.c.log_id == log_id, db.payloads.c.idx == index))
        if not rows:
            return None
        row = rows[0]
        entry = self.get_entry(log_id, index)
        crypto = self._payload_crypto()
        rk = db.run_keys.c

        def run_key() -> bytes | None:
            keyrow = self._read(sa.select(db.run_keys).where(rk.log_id == log_id, rk.run_id == row.run_id))
            if not keyrow or keyrow[0].wrapped_key is None:
                return None
            return crypto.unwrap(keyrow[0].wrapped_key, log_id, row.run_id)

        key = _retry_rotation(run_key)
        if key is None:
            if row.members is not None:
                members = json.loads(row.members)
            else:  # v1 row: the members are not stored; every commitment of the body had one
                body = json.loads(entry.entry)["event"]["body"]
                members = sorted(m for m, v in body.items() if isinstance(v, dict) and set(v) == {"$commitment"})
            return Opened(erased={m: "run" for m in members}, run_erased=True)
        if row.members is None:
            return Opened(openings=crypto.open(key, row.nonce, row.ciphertext, log_id, index, entry.event_id))
        return crypto.open_entry(key, row.nonce, row.ciphertext, row.members, log_id, index, entry.event_id,
                                 lambda names: _retry_rotation(lambda: self._read_subject_keys(crypto, names)))

    def _read_subject_keys(self, crypto: PayloadCrypto, names: list[str]) -> dict[str, bytes | None]:
        sk = db.subject_keys.c
        rows = {r.subject: r.wrapped_key for r in self._read(sa.select(sk.subject, sk.wrapped_key).where(sk.subject.in_(names)))}
        missing = [s for s in names if s not in rows]
        if missing:
            raise PayloadError(f"no key is stored for subject {missing[0]} (storage is inconsistent)", where="subject_keys")
        files = crypto.ring.files()
        return {s: None if w is None else crypto.unwrap_subject(w, s, files) for s, w in rows.items()}

    def read_payload(self, log_id: str, index: int) -> dict | None:
        """The readable openings of an entry (auditor access); None if the entry has none.
        Raises PayloadError when the run was erased; openings of erased subjects are left out
        (read_openings says which)."""
        opened = self.read_openings(log_id, index)
        if opened is None:
            return None
        if opened.run_erased:
            raise PayloadError("the run's data key was erased: payload unreadable", where=f"entry {index}")
        return opened.openings

    def erase_run(self, log_id: str, run_id: str) -> "Erasure":
        """Destroy a run's data key so that no copy stays readable, and record it in the log
        (an `erasure` event in the same transaction); see ledger/erasure.py, docs/storage.md."""
        from rlhf_ledger.store.erasure import erase_run

        return erase_run(self, log_id, run_id)

    def erase_subject(self, subject: str) -> "Erasure":
        """Destroy a data subject's key (their openings in every run and log), recorded in each
        log that held them; see ledger/erasure.py, docs/storage.md."""
        from rlhf_ledger.store.erasure import erase_subject

        return erase_subject(self, subject)

    def _drop_old_copies(self) -> None:
        """Old row versions out of the database files: SQLite WAL frames, PostgreSQL dead tuples."""
        if self._sqlite:
            deadline = time.time() + self.erase_wait_seconds
            while True:
                with self.engine.connect() as conn:
                    raw = conn.connection.driver_connection
                    busy, _, _ = raw.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
                if not busy:
                    return
                if time.time() > deadline:  # a reader held a snapshot all along; say so, do not hide it
                    raise LedgerError("erased, but the WAL could not be truncated (a reader holds a snapshot); "
                                      "run the erasure again once readers are idle", code="wal_busy")
                time.sleep(0.1)
        else:
            with self.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                # VACUUM FULL keeps a dead row version while anything older than the erasure may
                # still need it: a snapshot in this database, or a transaction holding an xid in any
                # database of the server (a prepared one, a replication slot's xmin). Wait for them
                # (30 s, as for the SQLite WAL), else say so. Sessions of other roles whose state is
                # hidden from us cannot be waited for (docs/storage.md).
                t0 = conn.exec_driver_sql("SELECT mod(txid_snapshot_xmax(txid_current_snapshot()), 4294967296)").scalar()
                deadline = time.time() + self.erase_wait_seconds
                while True:
                    older = conn.exec_driver_sql(
                        "SELECT 'pid ' || pid FROM pg_stat_activity WHERE pid <> pg_backend_pid() AND ("
                        " (datname = current_database() AND backend_xmin IS NOT NULL AND age(backend_xmin) > age(%(t)s::text::xid))"
                        " OR (backend_xid IS NOT NULL AND age(backend_xid) > age(%(t)s::text::xid)))"
                        " UNION ALL SELECT 'prepared transaction ' || gid FROM pg_prepared_xacts"
                        " WHERE age(transaction) > age(%(t)s::text::xid)"
                        " UNION ALL SELECT 'replication slot ' || slot_name FROM pg_replication_slots"
                        " WHERE xmin IS NOT NULL AND age(xmin) > age(%(t)s::text::xid) LIMIT 1",
                        {"t": str(t0)}).first()
                    if older is None:
                        break
                    if time.time() > deadline:
                        raise LedgerError(f"erased, but a transaction begun before the erasure still runs ({older[0]}): "
                                          "the database keeps the old row version for it; run the erasure again once "
                                          "it has ended", code="snapshot_busy")
                    time.sleep(0.1)
                conn.exec_driver_sql("VACUUM FULL run_keys, subject_keys")

    def tlog_proof(self, log_id: str, index: int, size: int | None = None) -> str:
        """The entry's inclusion proof as a c2sp.org/tlog-proof@v1 file (docs/checkpoint-format.md)."""
        n, proof = self.inclusion_proof(log_id, index, size)
        cp = self.get_checkpoint(log_id, n)
        entry = self.get_entry(log_id, index).entry
        lines = ["c2sp.org/tlog-proof@v1", "extra " + base64.b64encode(entry).decode(), f"index {index}"]
        lines += [base64.b64encode(h).decode() for h in proof]
        return "\n".join(lines) + "\n\n" + cp.note


def _retry_rotation(fn: Callable[[], Any]) -> Any:
    """Unwrapping may race an erasure that re-wraps every key under a new KEK and shreds the old
    one between our read of the wrapped key and the KEK lookup: read again once."""
    try:
        return fn()
    except PayloadError:
        return fn()


def audit(ledger: Ledger, log_id: str) -> list[str]:
    """Re-check a log's stored state against its signed checkpoints; return the problems found.

    Detects a changed entry byte (leaf hash or event id mismatch), a deleted row (index gap),
    reordered rows (root differs from a signed checkpoint), stored nodes that disagree with
    the entries, and broken per-producer chains.
    """
    from rlhf_ledger.core.events import leaf_hash as _leaf

    problems: list[str] = []
    info = ledger.log_info(log_id)
    log_key_id = key_id(info.public_key)
    # Producer keys by log position (docs/keys.md): from the log's own key events.
    try:
        states = kev.key_states((r.idx, json.loads(r.entry)["event"]) for r in ledger.iter_entries(log_id, run_id=kev.KEYS_RUN))
    except (LedgerError, ValueError, KeyError) as e:
        problems.append(f"key events: {e}")
        states = {}
    cps = {c.size: c for c in ledger.list_checkpoints(log_id, limit=10**9)}
    for c in cps.values():
        try:
            parse_and_verify(c.note, info.origin, info.public_key)
        except ProofError as e:
            problems.append(f"checkpoint {c.size}: {e}")
    tree = merkle.InMemoryTree()
    chains: dict[tuple[str, str], tuple[int, str]] = {}
    expected = 0
    for row in ledger.iter_entries(log_id):
        if row.idx != expected:
            problems.append(f"entry index {expected}: missing (next stored index is {row.idx})")
            break
        expected += 1
        raw = row.entry
        if not isinstance(raw, (bytes, bytearray, memoryview)):
            problems.append(f"entry {row.idx}: stored as {type(raw).__name__}, not bytes")
            raw = str(raw).encode("utf-8")
        raw = bytes(raw)
        lh = _leaf(raw)
        if lh != row.leaf_hash:
            problems.append(f"entry {row.idx}: stored bytes do not hash to its leaf hash")
        try:
            p = parse_envelope(json.loads(raw), where=f"entry {row.idx}")
        except (LedgerError, ValueError) as e:
            problems.append(f"entry {row.idx}: does not parse as an envelope ({e})")
            tree.append_leaf_hash(lh)
            continue
        if p.entry != raw:
            problems.append(f"entry {row.idx}: not in canonical form")
        if kev.is_reserved_run(p.event["run_id"]):
            if p.producer != log_key_id:
                problems.append(f"entry {row.idx}: a record of reserved run {p.event['run_id']!r} not signed by the log key")
        elif (st := states.get(p.producer)) is not None and not st.accepts(row.idx):
            problems.append(f"entry {row.idx}: producer key {p.producer[:16]} was not registered or was revoked at this position")
        if (p.event_id != row.event_id or row.event_key != db.event_key(p.event_id) or p.producer != row.producer
                or p.event["seq"] != row.seq):
            problems.append(f"entry {row.idx}: indexed columns disagree with the stored event")
        key = (p.event["run_id"], p.producer)
        head = chains.get(key)
        want = (0, None) if head is None else (head[0] + 1, head[1])
        if (p.event["seq"], p.event["prev"]) != want:
            problems.append(f"entry {row.idx}: producer chain broken (seq {p.event['seq']}, expected {want[0]})")
        chains[key] = (p.event["seq"], p.event_id)
        tree.append_leaf_hash(lh)
        if tree.size in cps and tree.root() != cps[tree.size].root:
            problems.append(f"checkpoint {tree.size}: recomputed root differs from the signed root")
    if expected != info.size:
        problems.append(f"log size is {info.size} but {expected} contiguous entries are stored")
    if info.size and not problems:
        if ledger.root(log_id) != tree.root():
            problems.append("stored Merkle nodes disagree with the entries")
    return problems
