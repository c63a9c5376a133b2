"""Signed checkpoints of a log: listed, the latest, by size, and the latest as a C2SP note (public)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import PlainTextResponse

from rlhf_ledger.api import models as m
from rlhf_ledger.api import tokens as tok
from rlhf_ledger.api.deps import LogId, authenticate
from rlhf_ledger.api.problems import COMMON_RESPONSES
from rlhf_ledger.api.serialize import checkpoint_out
from rlhf_ledger.api.service import get_service
from rlhf_ledger.core.errors import NotFoundError

router = APIRouter(prefix="/v1", responses=COMMON_RESPONSES)


@router.get("/logs/{log_id}/checkpoints", response_model=list[m.CheckpointOut], tags=["checkpoints"])
def list_checkpoints(
    request: Request,
    log_id: str = LogId,
    after: int = Query(-1, ge=-1, le=m.MAX_INDEX, description="only sizes greater than this"),
    limit: int = Query(100, ge=1, le=1000),
    _: tok.Principal = Depends(authenticate),
) -> list[dict]:
    return [checkpoint_out(c) for c in get_service(request).ledger.list_checkpoints(log_id, after=after, limit=limit)]


# Before /checkpoints/{size}: "latest" is not a size.
@router.get("/logs/{log_id}/checkpoints/latest", response_model=m.CheckpointOut, tags=["checkpoints"])
def latest_checkpoint(request: Request, log_id: str = LogId, _: tok.Principal = Depends(authenticate)) -> dict:
    cp = get_service(request).ledger.latest_checkpoint(log_id)
    if cp is None:
        raise NotFoundError("the log has no checkpoint yet", where=f"log {log_id!r}")
    return checkpoint_out(cp)


@router.get("/logs/{log_id}/checkpoints/{size}", response_model=m.CheckpointOut, tags=["checkpoints"])
def get_checkpoint(request: Request, log_id: str = LogId, size: int = Path(ge=0, le=m.MAX_INDEX), _: tok.Principal = Depends(authenticate)) -> dict:
    return checkpoint_out(get_service(request).ledger.get_checkpoint(log_id, size))


@router.get(
    "/logs/{log_id}/checkpoint",
    response_class=PlainTextResponse,
    tags=["checkpoints"],
    summary="The latest signed checkpoint note (C2SP text, for witnesses)",
    responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}},
)
def latest_note(request: Request, log_id: str = LogId, _: tok.Principal = Depends(authenticate)) -> PlainTextResponse:
    cp = get_service(request).ledger.latest_checkpoint(log_id)
    if cp is None:
        raise NotFoundError("the log has no checkpoint yet", where=f"log {log_id!r}")
    return PlainTextResponse(cp.note)
