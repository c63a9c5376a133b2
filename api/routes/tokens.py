"""Bearer tokens over HTTP (admin): mint (shown once), list, revoke."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Path, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from rlhf_ledger.api import models as m
from rlhf_ledger.api import tokens as tok
from rlhf_ledger.api.deps import admin_body, body_schema, require
from rlhf_ledger.api.problems import COMMON_RESPONSES
from rlhf_ledger.api.service import get_service
from rlhf_ledger.core.roles import Role

router = APIRouter(prefix="/v1", responses=COMMON_RESPONSES)


@router.post("/tokens", response_model=m.TokenCreated, status_code=201, tags=["admin"], summary="Mint a token (admin); the token is shown once",
             openapi_extra=body_schema(m.TokenCreate))
async def create_token(request: Request, p: tok.Principal = Depends(require(Role.ADMIN))) -> JSONResponse:
    body = await admin_body(request, m.TokenCreate)
    text, principal = await run_in_threadpool(
        tok.create_token, get_service(request).ledger.tokens, body.role, label=body.label, log_ids=body.log_ids,
        producer_key_ids=body.producer_key_ids, run_ids=body.run_ids, created_by=p.token_id,
    )
    out = principal.as_json()
    out.update(token=text, created_by=p.token_id)
    return JSONResponse(out, status_code=201)


@router.get("/tokens", response_model=list[m.TokenOut], tags=["admin"])
def list_tokens(request: Request, _: tok.Principal = Depends(require(Role.ADMIN))) -> list[dict]:
    return tok.list_tokens(get_service(request).ledger.tokens)


@router.post("/tokens/{token_id}/revoke", response_model=m.TokenOut, tags=["admin"])
def revoke_token(request: Request, token_id: str = Path(pattern=r"^[0-9a-f]{16}$"), _: tok.Principal = Depends(require(Role.ADMIN))) -> dict:
    tokens = get_service(request).ledger.tokens
    tok.revoke_token(tokens, token_id)
    return next(t for t in tok.list_tokens(tokens) if t["token_id"] == token_id)
