"""Entries with their inclusion proofs, tlog-proof files and consistency proofs (public)."""

from __future__ import annotations

import time

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import JSONResponse, PlainTextResponse

from rlhf_ledger.api import models as m
from rlhf_ledger.api import tokens as tok
from rlhf_ledger.api.deps import Index, LogId, authenticate
from rlhf_ledger.api.problems import COMMON_RESPONSES, ApiProblem
from rlhf_ledger.api.serialize import b64, entry_out
from rlhf_ledger.api.service import get_service

router = APIRouter(prefix="/v1", responses=COMMON_RESPONSES)


@router.get("/logs/{log_id}/entries/{index}", response_model=m.EntryOut, tags=["proofs"], summary="An entry with its inclusion proof")
def get_entry(
    request: Request,
    log_id: str = LogId,
    index: int = Index,
    anchored: bool = Query(False, description="prove to the latest anchored checkpoint instead of the latest checkpoint"),
    _: tok.Principal = Depends(authenticate),
) -> JSONResponse:
    svc = get_service(request)
    return JSONResponse(entry_out(svc, log_id, svc.ledger.get_entry(log_id, index), anchored))


@router.get("/logs/{log_id}/events/{event_id}", response_model=m.EntryOut, tags=["proofs"], summary="An event by id with its inclusion proof")
def get_event(
    request: Request,
    log_id: str = LogId,
    event_id: str = Path(pattern=r"^[0-9a-f]{64}$"),
    anchored: bool = Query(False),
    _: tok.Principal = Depends(authenticate),
) -> JSONResponse:
    svc = get_service(request)
    return JSONResponse(entry_out(svc, log_id, svc.ledger.find_event(log_id, event_id), anchored))


@router.get(
    "/logs/{log_id}/entries/{index}/tlog-proof",
    response_class=PlainTextResponse,
    tags=["proofs"],
    summary="The entry's proof as a c2sp.org/tlog-proof@v1 file",
    responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}},
)
def get_tlog_proof(
    request: Request, log_id: str = LogId, index: int = Index, anchored: bool = Query(False), _: tok.Principal = Depends(authenticate)
) -> PlainTextResponse:
    svc = get_service(request)
    t0 = time.perf_counter()
    size = None
    if anchored:
        a = svc.ledger.anchors.latest_settled(log_id)
        if a is None or index >= a.checkpoint_size:
            raise ApiProblem(404, "not_anchored", f"entry {index} is not covered by an anchored checkpoint yet")
        size = a.checkpoint_size
    else:
        svc.ledger.get_entry(log_id, index)
        cp = svc.ledger.latest_checkpoint(log_id)
        if cp is None or index >= cp.size:
            raise ApiProblem(404, "not_checkpointed", f"entry {index} is not covered by a checkpoint yet")
    text = svc.ledger.tlog_proof(log_id, index, size)
    svc.metrics.proof_latency.labels("tlog_proof").observe(time.perf_counter() - t0)
    return PlainTextResponse(text)


@router.get("/logs/{log_id}/consistency", response_model=m.ConsistencyOut, tags=["proofs"], summary="RFC 9162 consistency proof")
def get_consistency(
    request: Request,
    log_id: str = LogId,
    first: int = Query(ge=0, le=m.MAX_INDEX),
    second: int = Query(ge=0, le=m.MAX_INDEX),
    _: tok.Principal = Depends(authenticate),
) -> dict:
    svc = get_service(request)
    t0 = time.perf_counter()
    proof = svc.ledger.consistency_proof(log_id, first, second)
    svc.metrics.proof_latency.labels("consistency").observe(time.perf_counter() - t0)
    return {"first": first, "second": second, "proof": [b64(h) for h in proof]}
