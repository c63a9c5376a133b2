"""GET /v1/whoami: the caller's role and scope."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from rlhf_ledger.api import models as m
from rlhf_ledger.api import tokens as tok
from rlhf_ledger.api.deps import authenticate
from rlhf_ledger.api.problems import COMMON_RESPONSES

router = APIRouter(prefix="/v1", responses=COMMON_RESPONSES)


@router.get("/whoami", response_model=m.Principal, tags=["access"], summary="The caller's role and scope")
def whoami(p: tok.Principal = Depends(authenticate)) -> dict:
    return p.as_json()
