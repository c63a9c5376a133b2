"""The background sender: builds, signs, group-commits and delivers a run's events.

The training thread only writes an unsigned journal line and enqueues it (``Journal.append``
then :meth:`Sender.submit`). This thread, in seq order: parses the line, fills in ``prev`` (the
hash of the previous event), validates and signs the event, fsyncs the journal once per batch
(mode ``"batch"``), delivers up to ``sink.max_batch`` envelopes, checks every acknowledgement's
event id against its own, records the acknowledgement and trims the spool.

Transient failures are retried with capped exponential backoff and jitter (``Retry-After`` is
honoured). A permanent refusal writes the batch and the problem to ``deadletter.jsonl``,
stops delivery for this process (later events would not continue the refused chain anyway)
and is raised by :meth:`flush`; nothing is removed from the journal, so a restart after the
cause is fixed (e.g. the producer key registered) delivers everything.
"""

from __future__ import annotations

import base64
import hashlib
import json
import queue
import random
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

from rlhf_ledger.core.events import EVENT_VERSION, validate_event
from rlhf_ledger.core.keys import Signer
from rlhf_ledger.sdk.sinks import Ack, DeliveryError, PermanentDeliveryError, Sink, TransientDeliveryError
from rlhf_ledger.sdk.spool import Journal


@dataclass
class _Built:
    seq: int
    event_id: str
    type: str
    envelope: dict


class Sender:
    def __init__(
        self,
        journal: Journal,
        signer: Signer,
        sink: Sink,
        *,
        log_id: str,
        run_id: str,
        queue_size: int = 65536,
        fsync_interval: float = 0.02,
        backoff_base: float = 0.2,
        backoff_max: float = 30.0,
    ):
        self.journal, self.signer, self.sink = journal, signer, sink
        self.log_id, self.run_id, self.producer = log_id, run_id, signer.key_id
        self.fsync_interval = fsync_interval
        self.backoff_base, self.backoff_max = backoff_base, backoff_max
        rec = journal.recovered
        self._queue: queue.Queue[bytes] = queue.Queue(maxsize=queue_size)
        self._recovered: deque[bytes] = deque(rec.pending)  # replayed before anything new
        self._prev: str | None = rec.acked_hash
        self._next_build = rec.acked_seq + 1
        self._unacked: list[_Built] = []
        self._types: set[str] = set(rec.types_seen)
        self._cond = threading.Condition()
        self.acked_seq = rec.acked_seq
        self.acks: list[Ack] = []  # every acknowledgement received by this process, in order
        self.error: DeliveryError | None = None
        self.dead_letter_path: Path | None = None
        self.last_transient_error: str | None = None
        self.retries = 0
        self._stop = threading.Event()  # finish what is queued, then exit
        self._abandon = threading.Event()  # exit now; the journal keeps what was not delivered
        journal.start_sync_timer(fsync_interval)
        self._thread = threading.Thread(target=self._run, name=f"rlhf-ledger-sender[{run_id}]", daemon=True)
        self._thread.start()

    # --- training-thread side -------------------------------------------------------------

    def submit(self, line: bytes) -> None:
        self._queue.put(line)  # blocks only when the sender is queue_size events behind

    def flush(self, timeout: float | None = None, *, upto: int | None = None) -> None:
        """Wait until every event journaled so far is acknowledged (or raise why not)."""
        target = (self.journal.next_seq - 1) if upto is None else upto
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while self.acked_seq < target:
                if self.error is not None:
                    raise self.error
                if not self._thread.is_alive():
                    raise DeliveryError("the sender thread has stopped", where=str(self.journal.dir))
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    why = f" (last error: {self.last_transient_error})" if self.last_transient_error else ""
                    raise TimeoutError(
                        f"{target - self.acked_seq} event(s) not yet acknowledged after {timeout}s{why}; "
                        f"they stay in the spool {self.journal.dir}"
                    )
                self._cond.wait(timeout=0.05 if left is None else min(left, 0.05))
            if self.error is not None:
                raise self.error

    def close(self, timeout: float | None = 30.0) -> None:
        """Deliver what is queued (up to ``timeout``), stop the thread, close the journal."""
        self._stop.set()
        self._thread.join(timeout)
        if self._thread.is_alive():
            self._abandon.set()
            self._thread.join()
        self.journal.close(acked_seq=self.acked_seq)
        # The sink is not closed here: one sink may serve several runs; its owner closes it.

    # --- sender thread --------------------------------------------------------------------

    def _next_line(self, block_for: float) -> bytes | None:
        if self._recovered:
            return self._recovered.popleft()
        try:
            return self._queue.get(timeout=block_for) if block_for > 0 else self._queue.get_nowait()
        except queue.Empty:
            return None

    def _build(self, line: bytes) -> _Built:
        rec = json.loads(line)
        seq = rec["seq"]
        if seq != self._next_build:
            raise PermanentDeliveryError(f"journal record seq {seq}, expected {self._next_build}", where=str(self.journal.dir))
        event = {
            "v": EVENT_VERSION,
            "log_id": self.log_id,
            "run_id": self.run_id,
            "type": rec["type"],
            "producer": self.producer,
            "seq": seq,
            "prev": self._prev,
            "ts": rec["ts"],
            "body": rec["body"],
        }
        raw = validate_event(event)  # canonical bytes; raises EventError with the path
        envelope = {"event": event, "sig": base64.b64encode(self.signer.sign(raw)).decode("ascii")}
        if rec.get("openings"):
            envelope["openings"] = rec["openings"]
            if rec.get("subjects"):
                envelope["subjects"] = rec["subjects"]
        event_id = hashlib.sha256(raw).hexdigest()
        self._prev, self._next_build = event_id, seq + 1
        return _Built(seq, event_id, rec["type"], envelope)

    def _run(self) -> None:
        while not self._abandon.is_set():
            first = self._next_line(self.fsync_interval)
            lines = [] if first is None else [first]
            while first is not None and len(lines) < self.sink.max_batch:
                nxt = self._next_line(0)
                if nxt is None:
                    break
                lines.append(nxt)
            if lines and self.journal.fsync_mode == "batch" and self.journal.synced_seq < self.journal.next_seq - 1:
                self.journal.sync()  # nothing is sent before it is on disk (the timer usually got there first)
            if self.error is not None:  # delivery stopped: keep draining so training never blocks
                if not lines and self._stop.is_set():
                    break
                continue
            for line in lines:
                try:
                    self._unacked.append(self._build(line))
                except Exception as e:  # a record that cannot become an event
                    err = e if isinstance(e, DeliveryError) else PermanentDeliveryError(
                        f"cannot build event from journal record: {e}", where=str(self.journal.dir))
                    self._fail(err, [line.decode(errors="replace")])
                    break
            if self.error is not None:
                continue
            if self._unacked:
                self._deliver()
            elif self._stop.is_set() and not lines and not self._recovered and self._queue.empty():
                break

    def _deliver(self) -> None:
        attempt = 0
        while self._unacked and not self._abandon.is_set():
            batch = self._unacked[: self.sink.max_batch]
            try:
                acks = self.sink.send([b.envelope for b in batch])
                # the built-in sinks check this; a custom Sink might not, and a short list would
                # otherwise mark the unacknowledged tail as delivered
                if len(acks) != len(batch):
                    raise PermanentDeliveryError(f"ledger acknowledged {len(acks)} of {len(batch)} events", where="ack")
                for b, a in zip(batch, acks, strict=True):
                    if a.event_id != b.event_id:
                        raise PermanentDeliveryError(
                            f"ledger acknowledged event id {a.event_id[:16]}... for seq {b.seq}, expected {b.event_id[:16]}...",
                            where="ack",
                        )
            except TransientDeliveryError as e:
                self.last_transient_error = str(e)
                self.retries += 1
                delay = min(self.backoff_max, self.backoff_base * (2**attempt)) * (0.5 + random.random() / 2)
                if e.retry_after is not None:
                    delay = max(delay, min(e.retry_after, self.backoff_max))
                attempt += 1
                if self._abandon.wait(delay):
                    return
                continue
            except PermanentDeliveryError as e:
                self._fail(e, [b.envelope for b in batch])
                return
            attempt = 0
            self.last_transient_error = None
            del self._unacked[: len(batch)]
            for b in batch:
                self._types.add(b.type)
            last = batch[-1]
            self.journal.mark_acked(last.seq, last.event_id, self._types)
            with self._cond:
                self.acks.extend(acks)
                self.acked_seq = last.seq
                self._cond.notify_all()

    def _fail(self, err: DeliveryError, items: list) -> None:
        problem = getattr(err, "problem", None) or {}
        self.dead_letter_path = self.journal.dead_letter(
            {"error": {"code": err.code, "message": err.message, "where": err.where, "problem": problem}, "envelopes": items}
        )
        err.message = f"run {self.run_id}: {err.message} (batch kept in {self.dead_letter_path}; events stay in the spool)"
        with self._cond:
            self.error = err
            self._unacked.clear()
            self._cond.notify_all()
        # Said when it happens, not when training ends (the training thread also gets it raised at
        # its next SDK call, unless the run was opened with on_delivery_error="warn").
        try:
            print(f"rlhf-ledger: delivery of run {self.run_id} (log {self.log_id}) stopped: {type(err).__name__}: {err}. "
                  f"Later events are kept in the spool {self.journal.dir}; fix the cause, then "
                  f"`rlhf-ledger spool flush {self.journal.dir}` delivers them", file=sys.stderr, flush=True)
        except Exception:  # a closed stderr must not kill the sender
            pass
