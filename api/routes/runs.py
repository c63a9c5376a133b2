"""GET /v1/logs/{log_id}/runs: the runs of a log with their status (store/run_list.py)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel

from rlhf_ledger.api import models as m
from rlhf_ledger.api import tokens as tok
from rlhf_ledger.api.deps import LogId, authenticate
from rlhf_ledger.api.problems import COMMON_RESPONSES
from rlhf_ledger.api.service import get_service
from rlhf_ledger.store.run_list import list_runs as runs_of

router = APIRouter(prefix="/v1", responses=COMMON_RESPONSES)


class RunOut(BaseModel):
    run_id: str
    status: str  # open | ended
    end_status: str | None
    started: bool
    events: int
    producers: int
    first_index: int
    last_index: int
    first_ts: str
    last_ts: str
    payloads_erased: bool


@router.get("/logs/{log_id}/runs", response_model=list[RunOut], tags=["logs"],
            summary="The log's runs with their status (open, or ended by run.end)")
def list_runs(request: Request, log_id: str = LogId,
              after: str | None = Query(None, pattern=m.LOG_ID_PATTERN, description="only run ids after this one"),
              limit: int = Query(100, ge=1, le=1000), _: tok.Principal = Depends(authenticate)) -> list[dict]:
    return [r.as_json() for r in runs_of(get_service(request).ledger, log_id, limit=limit, after=after)]
