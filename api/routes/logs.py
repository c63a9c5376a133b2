"""Logs and their producer keys: listing (public), creation, registration, revocation (admin)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Path, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from rlhf_ledger.api import models as m
from rlhf_ledger.api import tokens as tok
from rlhf_ledger.api.deps import LogId, admin_body, authenticate, body_schema, require
from rlhf_ledger.api.problems import COMMON_RESPONSES, ApiProblem
from rlhf_ledger.api.serialize import log_out
from rlhf_ledger.api.service import get_service
from rlhf_ledger.core.keys import unb64
from rlhf_ledger.core.roles import Role

router = APIRouter(prefix="/v1", responses=COMMON_RESPONSES)


@router.get("/logs", response_model=list[m.LogOut], tags=["logs"])
def list_logs(request: Request, _: tok.Principal = Depends(authenticate)) -> list[dict]:
    return [log_out(i) for i in get_service(request).ledger.list_logs()]


@router.post("/logs", response_model=m.LogOut, status_code=201, tags=["admin"], summary="Create a log (admin)",
             openapi_extra=body_schema(m.LogCreate))
async def init_log(request: Request, _: tok.Principal = Depends(require(Role.ADMIN))) -> JSONResponse:
    body = await admin_body(request, m.LogCreate)
    info = await run_in_threadpool(
        get_service(request).ledger.init_log, body.log_id, origin=body.origin, checkpoint_every_events=body.checkpoint_every_events,
        checkpoint_every_seconds=body.checkpoint_every_seconds,
    )
    return JSONResponse(log_out(info), status_code=201)


@router.get("/logs/{log_id}", response_model=m.LogOut, tags=["logs"])
def get_log(request: Request, log_id: str = LogId, _: tok.Principal = Depends(authenticate)) -> dict:
    return log_out(get_service(request).ledger.log_info(log_id))


@router.get("/logs/{log_id}/producers", response_model=list[m.ProducerOut], tags=["logs"])
def list_producers(request: Request, log_id: str = LogId, _: tok.Principal = Depends(authenticate)) -> list[dict]:
    ledger = get_service(request).ledger
    ledger.log_info(log_id)
    return ledger.producers(log_id)


@router.post("/logs/{log_id}/producers", response_model=m.KeyIdOut, status_code=201, tags=["admin"], summary="Register a producer key (admin)",
             openapi_extra=body_schema(m.ProducerCreate))
async def register_producer(request: Request, log_id: str = LogId, _: tok.Principal = Depends(require(Role.ADMIN))) -> JSONResponse:
    body = await admin_body(request, m.ProducerCreate)
    try:
        pk = unb64(body.public_key, what="public_key", length=32)
    except ValueError as e:
        raise ApiProblem(422, "invalid_key", str(e), errors=[{"index": None, "code": "invalid_key", "where": "public_key", "detail": str(e)}]) from None
    kid = await run_in_threadpool(get_service(request).ledger.register_producer, log_id, pk, body.label)
    return JSONResponse({"log_id": log_id, "key_id": kid, "status": "active"}, status_code=201)


@router.post("/logs/{log_id}/producers/{key_id}/revoke", response_model=m.KeyIdOut, tags=["admin"], summary="Revoke a producer key (admin)")
def revoke_producer(
    request: Request, log_id: str = LogId, key_id: str = Path(pattern=m.KEY_ID_PATTERN), _: tok.Principal = Depends(require(Role.ADMIN))
) -> dict:
    svc = get_service(request)
    ledger = svc.ledger
    ledger.log_info(log_id)
    if log_id == svc.settings.audit_log_id and key_id == svc.service_key_id:
        # Revoking it would silently stop the denial records (docs/security.md): the service
        # rotates this key itself, at start, when it finds it revoked offline.
        raise ApiProblem(409, "service_key", "the audit service key cannot be revoked over the API; revoke it offline "
                         "(rlhf-ledger revoke-producer) and restart the service, which then rotates it")
    ledger.revoke_producer(log_id, key_id)
    return {"log_id": log_id, "key_id": key_id, "status": "revoked"}
