"""GET /v1/logs/{log_id}/runs: the runs of a log with their status (ledger/run_list.py)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel

from rlhf_ledger.api import models as m
from rlhf_ledger.api.problems import COMMON_RESPONSES


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


def make_router(authenticate, log_id_param) -> APIRouter:
    router = APIRouter(responses=COMMON_RESPONSES)

    @router.get("/logs/{log_id}/runs", response_model=list[RunOut], tags=["logs"],
                summary="The log's runs with their status (open, or ended by run.end)")
    def list_runs(request: Request, log_id: str = log_id_param,
                  after: str | None = Query(None, pattern=m.LOG_ID_PATTERN, description="only run ids after this one"),
                  limit: int = Query(100, ge=1, le=1000), _=Depends(authenticate)) -> list[dict]:
        from rlhf_ledger.store.run_list import list_runs as runs

        return [r.as_json() for r in runs(request.app.state.service.ledger, log_id, limit=limit, after=after)]

    return router
