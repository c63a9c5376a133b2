"""Records of the store as the API's JSON bodies (docs/api.md), and bundle lines as a stream."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from typing import Any

from rlhf_ledger.api.service import Service
from rlhf_ledger.core.checkpoints import Checkpoint
from rlhf_ledger.core.events import envelope_of
from rlhf_ledger.core.redact import redact_secrets
from rlhf_ledger.export.bundle import Scope, iter_bundle_lines
from rlhf_ledger.store.anchors import AnchorRecord
from rlhf_ledger.store.ledger import EntryRecord
from rlhf_ledger.store.records import LogInfo


def b64(b: bytes) -> str:
    return base64.b64encode(b).decode("ascii")


def log_out(info: LogInfo) -> dict:
    return {
        "log_id": info.log_id,
        "origin": info.origin,
        "public_key": b64(info.public_key),
        "vkey": info.vkey,
        "size": info.size,
        "checkpoint_every_events": info.checkpoint_every_events,
        "checkpoint_every_seconds": info.checkpoint_every_seconds,
    }


def checkpoint_out(cp: Checkpoint) -> dict:
    return {"origin": cp.origin, "size": cp.size, "root": b64(cp.root), "note": cp.note}


def anchor_out(r: AnchorRecord) -> dict:
    confirmations = None
    if r.evidence_json:
        try:
            ev = json.loads(r.evidence_json)
            c = ev.get("confirmations") if isinstance(ev, dict) else None
            confirmations = c if isinstance(c, int) else None
        except ValueError:
            pass
    return {
        "id": r.id,
        "log_id": r.log_id,
        "status": str(r.status),
        "prev_size": r.prev_size,
        "checkpoint_size": r.checkpoint_size,
        "covered_range": [r.prev_size, r.checkpoint_size],
        "cid": r.cid,
        "chain_id": r.chain_id,
        "contract": r.contract,
        "tx_hash": r.tx_hash,
        "block_number": r.block_number,
        "block_hash": r.block_hash,
        "block_timestamp": r.block_timestamp,
        "log_index": r.log_index,
        "confirmations": confirmations,
        "attempts": r.attempts,
        "error": redact_secrets(r.error) if r.error else r.error,
        "created_at": r.created_at,
        "updated_at": r.updated_at,
    }


def entry_out(svc: Service, log_id: str, row: EntryRecord, anchored: bool) -> dict:
    """An entry with its inclusion proof to the latest (or the latest anchored) checkpoint that
    covers it; `proof` is null while none does."""
    ledger = svc.ledger
    t0 = time.perf_counter()
    proof = None
    anchor = ledger.anchors.latest_settled(log_id) if anchored else None
    size: int | None
    if anchored:
        size = anchor.checkpoint_size if anchor is not None and row.idx < anchor.checkpoint_size else None
    else:
        latest = ledger.latest_checkpoint(log_id)
        size = latest.size if latest is not None and row.idx < latest.size else None
    if size is not None:
        n, path = ledger.inclusion_proof(log_id, row.idx, size)
        proof = {
            "tree_size": n,
            "inclusion": [b64(h) for h in path],
            "checkpoint": checkpoint_out(ledger.get_checkpoint(log_id, n)),
            "anchor": anchor_out(anchor) if anchor is not None else None,
        }
    svc.metrics.proof_latency.labels("anchored_inclusion" if anchored else "inclusion").observe(time.perf_counter() - t0)
    return {
        "log_id": log_id,
        "index": row.idx,
        "event_id": row.event_id,
        "leaf_hash": b64(row.leaf_hash),
        "run_id": row.run_id,
        "producer": row.producer,
        "seq": row.seq,
        "type": row.type,
        "ts": row.ts,
        "appended_at": row.appended_at,
        "envelope": envelope_of(row.entry),
        "proof": proof,
    }


def stream_bundle(svc: Service, log_id: str, scope: dict, *, anchored: bool = False) -> Iterator[bytes]:
    """Prime the exporter (so errors found before the first line become problems), then stream."""
    lines = iter(iter_bundle_lines(svc.ledger, log_id, Scope(**scope), require_anchor=anchored))
    first = next(lines)

    def gen() -> Iterator[bytes]:
        yield _line(first)
        for line in lines:
            yield _line(line)

    return gen()


def _line(line: Any) -> bytes:
    if isinstance(line, bytes):
        return line if line.endswith(b"\n") else line + b"\n"
    if isinstance(line, str):
        return (line if line.endswith("\n") else line + "\n").encode()
    return (json.dumps(line, separators=(",", ":"), ensure_ascii=False) + "\n").encode()
