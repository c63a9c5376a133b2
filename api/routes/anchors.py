"""Anchors of a log on the chain, and which anchor covers an entry (public)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Path, Query, Request

from rlhf_ledger.api import models as m
from rlhf_ledger.api import tokens as tok
from rlhf_ledger.api.deps import Index, LogId, authenticate
from rlhf_ledger.api.problems import COMMON_RESPONSES
from rlhf_ledger.api.serialize import anchor_out
from rlhf_ledger.api.service import get_service
from rlhf_ledger.core.anchor_status import IN_FLIGHT, SETTLED, AnchorStatus
from rlhf_ledger.core.errors import NotFoundError

router = APIRouter(prefix="/v1", responses=COMMON_RESPONSES)

_ANCHOR_STATUS_PATTERN = "^(" + "|".join(AnchorStatus) + ")$"


@router.get("/logs/{log_id}/anchors", response_model=list[m.AnchorOut], tags=["anchors"])
def list_anchors(
    request: Request,
    log_id: str = LogId,
    status: str | None = Query(None, pattern=_ANCHOR_STATUS_PATTERN),
    after_id: int = Query(0, ge=0, le=m.MAX_INDEX),
    limit: int = Query(100, ge=1, le=1000),
    _: tok.Principal = Depends(authenticate),
) -> list[dict]:
    ledger = get_service(request).ledger
    ledger.log_info(log_id)
    rows = ledger.anchors.page(log_id, after_id=after_id, status=AnchorStatus(status) if status else None, limit=limit)
    return [anchor_out(r) for r in rows]


@router.get("/logs/{log_id}/anchors/{anchor_id}", response_model=m.AnchorOut, tags=["anchors"])
def get_anchor(request: Request, log_id: str = LogId, anchor_id: int = Path(ge=0, le=m.MAX_INDEX), _: tok.Principal = Depends(authenticate)) -> dict:
    found = get_service(request).ledger.anchors.get(log_id, anchor_id)
    if found is None:
        raise NotFoundError(f"no anchor {anchor_id}", where=f"log {log_id!r}")
    return anchor_out(found)


@router.get("/logs/{log_id}/entries/{index}/anchor", response_model=m.EntryAnchorOut, tags=["anchors"], summary="Which anchor covers an entry, since when")
def entry_anchor(request: Request, log_id: str = LogId, index: int = Index, _: tok.Principal = Depends(authenticate)) -> dict:
    ledger = get_service(request).ledger
    ledger.get_entry(log_id, index)
    rows = ledger.anchors.covering(log_id, index)
    done = [r for r in rows if r.status in SETTLED]
    # The first confirmed anchor with a larger tree is the one that first covered the entry.
    first = done[0] if done else None
    pending = [r for r in rows if r.status in IN_FLIGHT]
    since = None
    if first is not None:
        since = float(first.block_timestamp) if first.block_timestamp is not None else first.updated_at
    return {
        "index": index,
        "covered": first is not None,
        "since": since,
        "anchor": anchor_out(first) if first is not None else None,
        "pending": [anchor_out(r) for r in pending],
    }
