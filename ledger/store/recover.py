"""Recovery of a log whose database is behind what it published (ledger/fork_guard.py).

After a restore from backup, or a failover to an asynchronous replica that had not replayed
the last commits, the database lacks a tail of entries that a published checkpoint (or an
anchor on chain) covers. The producers still hold those events, signed: re-appending them
(their signatures and event ids are unchanged) restores the tail, provided they land at the
same indices. This module finds that order *before* appending anything: it folds the
database's stored prefix with the candidate leaf hashes and compares the root at every
reference size with the published root. Only an order that reproduces every published root is
appended; otherwise nothing is written and the caller is told why.

Orders tried: the files' order as given (a single producer's record is already in log order),
then by (ts, run, producer, seq) (the order the producers emitted them).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.engine import Connection

from rlhf_ledger.core import merkle
from rlhf_ledger.core.errors import EventError, LedgerError, NotFoundError
from rlhf_ledger.core.events import ParsedEvent, parse_envelope
from rlhf_ledger.store.ledger import Ledger
from rlhf_ledger.store.reader import node_getter


class RecoveryError(LedgerError):
    code = "recovery_failed"


@dataclass
class RecoveryResult:
    log_id: str
    size_before: int
    appended: int
    already_present: int
    size_after: int
    reference_size: int


def read_envelopes(paths: list[Path]) -> list[ParsedEvent]:
    out: list[ParsedEvent] = []
    for path in paths:
        with open(path, encoding="utf-8") as fh:
            for n, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    out.append(parse_envelope(json.loads(line), where=f"{path}:{n}"))
                except ValueError as e:
                    raise EventError(f"not JSON: {e}", where=f"{path}:{n}") from None
    return out


def _root_with(ledger: Ledger, log_id: str, db_size: int, leaves: list[bytes], size: int) -> bytes:
    """Root of the tree of `size` = the stored prefix [0, db_size) + `leaves` (not stored)."""
    def compute(conn: Connection) -> bytes:
        stored = node_getter(conn, log_id)
        mem: dict[merkle.NodeKey, bytes] = {}

        def get(keys: list[merkle.NodeKey]) -> dict[merkle.NodeKey, bytes]:
            have = {k: mem[k] for k in keys if k in mem}
            rest = [k for k in keys if k not in mem]
            if rest:
                have.update(stored(rest))
            return have

        for i, h in enumerate(leaves[: size - db_size]):
            mem[(0, db_size + i)] = h
            for lv, ix, nh in merkle.append_nodes(db_size + i, h, get):
                mem[(lv, ix)] = nh
        return merkle.root(size, get)

    return ledger.database.read(compute)


def recover(ledger: Ledger, log_id: str, events: list[ParsedEvent], *, batch: int = 1000) -> RecoveryResult:
    guard = ledger.fork_guard
    if guard is None:
        raise RecoveryError("this ledger has no fork guard (open it with Ledger.open)", where=log_id)
    info = ledger.database.read(lambda conn: ledger.log_info(log_id, conn))  # the primary's, never a replica's
    refs = guard.references(log_id, info.origin, info.public_key)
    target = max((r.size for r in refs), default=0)
    missing: list[ParsedEvent] = []
    seen: set[str] = set()
    present = 0
    for p in events:
        if p.event_id in seen:
            continue
        seen.add(p.event_id)
        try:
            ledger.find_event(log_id, p.event_id)
            present += 1
        except NotFoundError:
            missing.append(p)
    need = target - info.size
    if need > len(missing):
        raise RecoveryError(
            f"the database holds {info.size} entries and {target} were published, but the files hold only "
            f"{len(missing)} events the database lacks; collect the other producers' records", where=log_id)
    orders = [missing, sorted(missing, key=lambda p: (p.event["ts"], p.event["run_id"], p.producer, p.event["seq"]))]
    chosen = None
    for order in orders:
        leaves = [p.leaf_hash for p in order]
        if all(r.size <= info.size or _root_with(ledger, log_id, info.size, leaves, r.size) == r.root for r in refs):
            chosen = order
            break
    if chosen is None:
        raise RecoveryError(
            "no order of these events reproduces the published roots (a producer's record is missing or the "
            "database's prefix differs); nothing was appended", where=log_id)
    ledger.recovering = True
    try:
        appended = 0
        for j in range(0, len(chosen), batch):
            results = ledger.append([_envelope(p) for p in chosen[j : j + batch]], log_id=log_id)
            appended += sum(not r.duplicate for r in results)
    finally:
        ledger.recovering = False
    why = ledger.fork_check(log_id)
    if why is not None:
        raise RecoveryError(f"events re-appended but the log is still refused: {why}", where=log_id)
    after = ledger.size(log_id)
    return RecoveryResult(log_id, info.size, appended, present, after, target)


def _envelope(p: ParsedEvent) -> dict:
    from rlhf_ledger.core.events import envelope_of

    env = envelope_of(p.entry)
    if p.openings is not None:
        env["openings"] = p.openings
    return env
