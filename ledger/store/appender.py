"""The appender part of the `Ledger` gateway: checking and appending batches of signed events,
and the log's own records (the producers' key events, erasure events) in reserved runs
(docs/storage.md "Append", docs/keys.md).

An append batch is checked, then applied in one transaction that holds the log's write lock
(SQLite: BEGIN IMMEDIATE; PostgreSQL: SELECT ... FOR UPDATE on the log row), so concurrent
writers in several processes produce one log with gap-free indices. A batch is acknowledged only
after its transaction committed.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from rlhf_ledger.core import key_events as kev
from rlhf_ledger.core import merkle, sigverify
from rlhf_ledger.core.chain import Break, chain_break
from rlhf_ledger.core.checkpoints import Checkpoint
from rlhf_ledger.core.errors import (
    ConflictError,
    EventError,
    LedgerError,
    ReservedRunError,
    RevokedKeyError,
    RunEndedError,
    SequenceError,
    SignatureError,
    UnknownKeyError,
)
from rlhf_ledger.core.events import ParsedEvent, make_event, parse_envelope, sign_event
from rlhf_ledger.core.keys import key_id
from rlhf_ledger.store import db
from rlhf_ledger.store.checkpointer import CheckpointerMixin
from rlhf_ledger.store.database import insert_many
from rlhf_ledger.store.fork_guard import SigningRefused
from rlhf_ledger.store.openings import OpeningsMixin
from rlhf_ledger.store.reader import last_checkpoint_size, node_getter
from rlhf_ledger.store.records import AppendResult

MAX_BATCH = 10_000


class BatchRejected(LedgerError):
    """At least one event of a batch was refused; nothing of the batch was stored."""

    code = "batch_rejected"

    def __init__(self, errors: list[tuple[int, LedgerError]]):
        self.errors = errors
        first_pos, first = errors[0]
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        super().__init__(f"event {first_pos} refused: {first}{more}")


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


class AppenderMixin(CheckpointerMixin, OpeningsMixin):
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
        rows = self.database.rows(
            sa.select(db.producers.c.key_id, db.producers.c.public_key, db.producers.c.status).where(
                db.producers.c.log_id == log_id, db.producers.c.key_id.in_(sorted(kids))
            ),
            replica=True,
        )
        return {r.key_id: (r.public_key, r.status) for r in rows}

    def _append_locked(self, log_id: str, events: list[ParsedEvent]) -> list[AppendResult]:
        with self.database.write() as conn:
            log = self._lock_log(conn, log_id)
            results, signed = self._append_in(conn, log_id, log, events)
        self._published(log_id, log.public_key, signed)
        return results

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
            seq = p.event["seq"]
            brk = chain_break(changed_heads.get(key) or heads.get(key), seq, p.event["prev"])
            if brk is not None:
                where = f"events[{i}].event.prev" if brk.kind == Break.PREV else f"events[{i}].event.seq"
                err = ConflictError if brk.kind == Break.REPLAY else SequenceError  # a fork or replay: conflict
                errors.append((i, err(brk.message, where=where)))
                results.append(None)
                continue
            changed_heads[key] = (seq, p.event_id)
            res = AppendResult(size + len(new), p.event_id, p.leaf_hash, False)
            in_batch[p.event_id] = res
            new.append((res.index, p))
            results.append(res)
            if p.event["type"] == "run.end":
                newly_ended[key[0]] = res.index
        if errors:
            raise BatchRejected(errors)
        if new:
            self._store_new(conn, log_id, size, new, changed_heads, heads)
            if newly_ended:
                conn.execute(db.ended_runs.insert(), [
                    {"log_id": log_id, "run_id": run, "end_idx": idx} for run, idx in sorted(newly_ended.items())])
            new_size = size + len(new)
            conn.execute(db.logs.update().where(db.logs.c.log_id == log_id).values(size=new_size))
            if new_size - last_checkpoint_size(conn, log_id) >= log.checkpoint_every_events:
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
        insert_many(
            conn,
            db.entries,
            ("log_id", "idx", "event_id", "event_key", "leaf_hash", "entry", "run_id", "producer", "seq", "type", "ts", "appended_at"),
            [
                (log_id, idx, p.event_id, db.event_key(p.event_id), p.leaf_hash, p.entry, p.event["run_id"], p.producer,
                 p.event["seq"], p.event["type"], p.event["ts"], now)
                for idx, p in new
            ],
        )
        new_nodes = merkle.append_many(size, [p.leaf_hash for _, p in new], node_getter(conn, log_id))
        # Level 0 is entries.leaf_hash already; only inner nodes go to `nodes`.
        insert_many(
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

    # --- the log's own records: key events ------------------------------------------------

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
        if self.database.rows(sa.select(db.producers.c.key_id).where(
                db.producers.c.log_id == log_id, db.producers.c.registered_idx.is_(None)).limit(1), replica=True):
            self.migrate_keys(log_id)

    def migrate_keys(self, log_id: str) -> int:
        """Write key events for producers registered before key events existed (docs/keys.md,
        "Migration of existing logs"); return how many key events were appended. Idempotent."""
        p = db.producers.c
        written = 0
        rows = self.database.rows(sa.select(db.producers).where(p.log_id == log_id, p.registered_idx.is_(None))
                                  .order_by(p.registered_at, p.key_id), replica=True)
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
        for row in self.database.rows(sa.select(db.producers).where(p.log_id == log_id, p.status == "revoked",
                                                                      p.revoked_idx.is_(None)).order_by(p.key_id), replica=True):
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
        with self.database.write() as conn:
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
