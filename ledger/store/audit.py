"""`rlhf-ledger audit`: re-check a log's stored state against its signed checkpoints
(docs/storage.md, "Tamper evidence"). Reads only, through the gateway's reader."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from rlhf_ledger.core import key_events as kev
from rlhf_ledger.core import merkle
from rlhf_ledger.core.chain import chain_break
from rlhf_ledger.core.checkpoints import parse_and_verify
from rlhf_ledger.core.errors import LedgerError, ProofError
from rlhf_ledger.core.events import leaf_hash, parse_envelope
from rlhf_ledger.core.keys import key_id
from rlhf_ledger.store import db

if TYPE_CHECKING:
    from rlhf_ledger.store.ledger import Ledger


def audit(ledger: Ledger, log_id: str) -> list[str]:
    """Re-check a log's stored state against its signed checkpoints; return the problems found.

    Detects a changed entry byte (leaf hash or event id mismatch), a deleted row (index gap),
    reordered rows (root differs from a signed checkpoint), stored nodes that disagree with
    the entries, and broken per-producer chains.
    """
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
        lh = leaf_hash(raw)
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
        brk = chain_break(chains.get(key), p.event["seq"], p.event["prev"])
        if brk is not None:
            problems.append(f"entry {row.idx}: producer chain broken (seq {p.event['seq']}, expected {brk.expected_seq}): "
                            f"{brk.message}")
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
