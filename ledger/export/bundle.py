"""Proof-bundle export (docs/bundle-format.md): a streamed, self-contained JSON Lines file.

The exporter reads the log page by page and yields one line at a time, so a bundle for a run of
any size is produced with memory that does not grow with the run. It takes the log through the
storage gateway and the settled anchors through the `SettledAnchors` interface (by default the
store's anchors repository), so export imports only the core and the store.
"""

from __future__ import annotations

import base64
import itertools
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from rlhf_ledger.core.errors import LedgerError, NotCoveredYetError, NotFoundError
from rlhf_ledger.core.events import now_ts
from rlhf_ledger.core.key_events import KEYS_RUN
from rlhf_ledger.store.ledger import EntryRecord, Ledger
from rlhf_ledger.store.run_index import run_membership

MEDIA_TYPE = "application/vnd.rlhf-ledger.bundle.v2+jsonl"
FORMAT = "rlhf-ledger-bundle"
VERSION = 2
INCLUSION_MODE_MAX_EVENTS = 1000  # above this, tree mode is smaller and faster to verify


class SettledAnchor(Protocol):
    """What a bundle's `anchor` record takes from a settled (confirmed or finalized) anchor."""

    @property
    def cid(self) -> str | None: ...

    @property
    def evidence(self) -> dict[str, Any] | None: ...


class SettledAnchors(Protocol):
    """Where settled anchors come from: the store's anchors repository (`ledger.anchors`)
    implements it; anything else that knows a log's settled anchors may stand in."""

    def settled_by_size(self, log_id: str) -> Mapping[int, SettledAnchor]:
        """Settled anchors of the log by checkpoint size (the newest record per size)."""
        ...


@dataclass(frozen=True)
class Scope:
    type: str  # event | range | run
    index: int | None = None
    start: int | None = None
    end: int | None = None
    run_id: str | None = None

    def as_json(self) -> dict:
        if self.type == "event":
            return {"type": "event", "start": self.index, "end": self.index + 1}  # type: ignore[operator]
        if self.type == "range":
            return {"type": "range", "start": self.start, "end": self.end}
        return {"type": "run", "run_id": self.run_id}


def _b64(h: bytes) -> str:
    return base64.b64encode(bytes(h)).decode()


def _line(obj: dict) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False) + "\n"


def _scope_stats(ledger: Ledger, log_id: str, scope: Scope) -> tuple[int, int, int]:
    """(number of events, first index, last index) of the scope."""
    if scope.type == "event":
        assert scope.index is not None
        span = ledger.entry_span(log_id, start=scope.index, end=scope.index + 1)
    elif scope.type == "range":
        span = ledger.entry_span(log_id, start=scope.start or 0, end=scope.end)
    elif scope.type == "run":
        span = ledger.entry_span(log_id, run_id=scope.run_id)
    else:
        raise LedgerError(f"unknown bundle scope {scope.type!r}", where="scope")
    if not span.count or span.first is None or span.last is None:
        raise NotFoundError(f"no events in scope {scope.as_json()}", where=f"log {log_id!r}")
    return span.count, span.first, span.last


def iter_bundle_lines(
    ledger: Ledger,
    log_id: str,
    scope: Scope,
    *,
    mode: str | None = None,
    include_openings: bool = False,
    content_store: Any = None,
    require_anchor: bool = False,
    anchors_from: SettledAnchors | None = None,
) -> Iterator[str]:
    """Yield the bundle's lines. `content_store` (get(cid) -> bytes) adds manifests offline;
    `anchors_from` gives the settled anchors (default: the ledger's anchors repository)."""
    info = ledger.log_info(log_id)
    count, first_index, last_index = _scope_stats(ledger, log_id, scope)
    anchors = (anchors_from or ledger.anchors).settled_by_size(log_id)
    anchored_sizes = sorted(s for s in anchors if s > 0)
    covering = [s for s in anchored_sizes if s > last_index]
    if covering:
        target = covering[0]
    else:
        if require_anchor:
            raise NotCoveredYetError(f"no confirmed anchor covers index {last_index} yet", where=f"log {log_id!r}",
                                     code="not_anchored")
        later = [c.size for c in ledger.list_checkpoints(log_id, after=last_index, limit=1)]
        if not later:
            raise NotCoveredYetError(
                f"no signed checkpoint covers index {last_index} yet; run `rlhf-ledger checkpoint`",
                where=f"log {log_id!r}",
                code="not_checkpointed",
            )
        target = later[0]
    # The final checkpoint `target` (the first anchored one after the last event) and every
    # anchored checkpoint before it that covers an event of the scope: each event's anchoring
    # time is its first covering anchor's (docs/bundle-format.md, "Record order").
    sizes = sorted({s for s in anchored_sizes if first_index < s <= target} | {target})
    mode = mode or ("inclusion" if count <= INCLUSION_MODE_MAX_EVENTS else "tree")
    if mode not in ("inclusion", "tree"):
        raise LedgerError(f"unknown bundle mode {mode!r}", where="mode")

    records = 0

    def emit(obj: dict) -> str:
        nonlocal records
        records += 1
        return _line(obj)

    yield emit(
        {
            "kind": "header",
            "format": FORMAT,
            "version": VERSION,
            "media_type": MEDIA_TYPE,
            "created": now_ts(),
            "mode": mode,
            "scope": scope.as_json(),
            "log": {"log_id": log_id, "origin": info.origin, "public_key": _b64(info.public_key)},
        }
    )
    for s in sizes:
        cp = ledger.get_checkpoint(log_id, s)
        yield emit({"kind": "checkpoint", "size": s, "root": _b64(cp.root), "note": cp.note})
    for a, b in itertools.pairwise(sizes):
        proof = ledger.consistency_proof(log_id, a, b)
        yield emit({"kind": "consistency", "from": a, "to": b, "proof": [_b64(h) for h in proof]})
    for s in sizes:
        anchor = anchors.get(s)
        if anchor is None:
            continue
        rec: dict[str, Any] = {"kind": "anchor", "checkpoint_size": s, "cid": anchor.cid, "evidence": anchor.evidence}
        if content_store is not None and anchor.cid:
            rec["manifest"] = _b64(content_store.get(anchor.cid))
        yield emit(rec)

    # The log's key events below the final checkpoint, complete by their run-index record: what
    # proves each producer key's registration and revocation positions (docs/keys.md).
    key_rows = list(ledger.iter_entries(log_id, 0, target, run_id=KEYS_RUN))
    if key_rows:
        index, record, position, proof = run_membership(ledger, log_id, KEYS_RUN, target)
        yield emit({"kind": "keys", "checkpoint_size": target, "note": index.note, "record": record,
                    "index": position, "proof": [_b64(h) for h in proof]})
        for row in key_rows:
            _, proof = ledger.inclusion_proof(log_id, row.idx, target)
            yield emit({"kind": "key_event", "index": row.idx, "envelope": json.loads(row.entry),
                        "inclusion": [_b64(h) for h in proof]})

    if scope.type == "run":
        # The log's signed statement of the run's membership at the bundle's final checkpoint
        # (docs/run-index.md): the verifier proves from it that no event of the run is missing.
        index, record, position, proof = run_membership(ledger, log_id, scope.run_id, target)  # type: ignore[arg-type]
        yield emit({"kind": "run", "checkpoint_size": target, "note": index.note, "record": record,
                    "index": position, "proof": [_b64(h) for h in proof]})

    events = 0
    if mode == "inclusion":
        for row in _iter_scope_entries(ledger, log_id, scope):
            _, proof = ledger.inclusion_proof(log_id, row.idx, target)
            rec = {"kind": "event", "index": row.idx, "envelope": json.loads(row.entry), "checkpoint_size": target,
                   "inclusion": [_b64(h) for h in proof]}
            if include_openings:
                _add_openings(ledger, log_id, row.idx, rec)
            events += 1
            yield emit(rec)
    else:
        in_scope = _iter_scope_entries(ledger, log_id, scope)
        nxt = next(in_scope, None)
        for idx, lh in ledger.iter_leaf_hashes(log_id, 0, target):
            if nxt is not None and nxt.idx == idx:
                rec = {"kind": "event", "index": idx, "envelope": json.loads(nxt.entry)}
                if include_openings:
                    _add_openings(ledger, log_id, idx, rec)
                events += 1
                yield emit(rec)
                nxt = next(in_scope, None)
            else:
                yield emit({"kind": "leaf", "index": idx, "hash": _b64(lh)})
    yield _line({"kind": "end", "events": events, "records": records})


def _add_openings(ledger: Ledger, log_id: str, index: int, rec: dict) -> None:
    """The entry's readable openings, and `erased` for those whose run or subject key was
    destroyed (docs/bundle-format.md): an erasure never stops an export."""
    opened = ledger.read_openings(log_id, index)
    if opened is None:
        return
    if opened.openings:
        rec["openings"] = opened.openings
    if opened.erased:
        rec["erased"] = dict(sorted(opened.erased.items()))


def _iter_scope_entries(ledger: Ledger, log_id: str, scope: Scope) -> Iterator[EntryRecord]:
    if scope.type == "event":
        yield ledger.get_entry(log_id, scope.index)  # type: ignore[arg-type]
    elif scope.type == "range":
        yield from ledger.iter_entries(log_id, scope.start or 0, scope.end)
    else:
        yield from ledger.iter_entries(log_id, run_id=scope.run_id)


def export_bundle(ledger: Ledger, log_id: str, out, scope: Scope, **kw: Any) -> int:
    """Write a bundle to a text stream; return the number of lines written."""
    n = 0
    for line in iter_bundle_lines(ledger, log_id, scope, **kw):
        out.write(line)
        n += 1
    return n
