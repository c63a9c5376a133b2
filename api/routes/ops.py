"""Operations: liveness (/healthz), readiness (/readyz) and Prometheus metrics (/metrics)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from rlhf_ledger.api import models as m
from rlhf_ledger.api.ops_metrics import fork_check_all
from rlhf_ledger.api.problems import COMMON_RESPONSES, problem_response
from rlhf_ledger.api.service import get_service
from rlhf_ledger.core.redact import redact_secrets

router = APIRouter()


@router.get("/healthz", response_model=m.Health, tags=["ops"], responses=COMMON_RESPONSES)
def healthz() -> dict:
    return {"status": "ok"}


@router.get("/readyz", response_model=m.Health, tags=["ops"], responses=COMMON_RESPONSES)
def readyz(request: Request) -> Response:
    try:
        ledger = get_service(request).ledger
        ledger.ping()  # a read: never queued behind an append (SQLite)
        refusals = fork_check_all(ledger)
    except Exception as e:  # noqa: BLE001 - any DB failure means not ready
        return problem_response(request, 503, "not_ready", redact_secrets(f"database check failed: {type(e).__name__}: {str(e).splitlines()[0][:200]}"))
    if refusals:  # a log refusing to sign must not take appends (docs/operations.md)
        return problem_response(request, 503, "log_refusing_to_sign", "; ".join(refusals)[:2000])
    return JSONResponse({"status": "ready"})


@router.get(
    "/metrics", tags=["ops"], response_class=PlainTextResponse, responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}, **COMMON_RESPONSES}
)
def metrics(request: Request) -> Response:
    return Response(generate_latest(get_service(request).metrics.registry), media_type=CONTENT_TYPE_LATEST)
