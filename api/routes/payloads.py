"""GET .../entries/{index}/payload: an entry's decrypted openings, for an auditor of its run."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request

from rlhf_ledger.api import models as m
from rlhf_ledger.api import tokens as tok
from rlhf_ledger.api.deps import Index, LogId, require
from rlhf_ledger.api.problems import COMMON_RESPONSES
from rlhf_ledger.api.service import get_service
from rlhf_ledger.core.roles import Role
from rlhf_ledger.store.payloads import ErasedError

router = APIRouter(prefix="/v1", responses=COMMON_RESPONSES)


@router.get("/logs/{log_id}/entries/{index}/payload", response_model=m.PayloadOut, tags=["payloads"], summary="Decrypted openings of an entry (auditor of its run)")
def get_payload(request: Request, log_id: str = LogId, index: int = Index,
                p: tok.Principal = Depends(require(Role.AUDITOR, bound_to_log=True))) -> dict:
    svc = get_service(request)
    row = svc.ledger.get_entry(log_id, index)
    if row.run_id not in p.run_ids:  # exact run ids: an auditor token names its runs
        raise svc.deny(request, p, 403, "run_not_bound", f"this token may not read payloads of run {row.run_id!r}")
    opened = svc.ledger.read_openings(log_id, index)
    if opened is not None and opened.run_erased:
        raise ErasedError("the run's data key was erased: payload unreadable", where=f"entry {index}")  # 410
    return {"index": index, "event_id": row.event_id, "run_id": row.run_id,
            "openings": None if opened is None else opened.openings, "erased": {} if opened is None else opened.erased}
