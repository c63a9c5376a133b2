"""Proof bundles (docs/bundle-format.md), streamed: one event, a range of entries, a run (public)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import StreamingResponse

from rlhf_ledger.api import models as m
from rlhf_ledger.api import tokens as tok
from rlhf_ledger.api.deps import Index, LogId, authenticate
from rlhf_ledger.api.problems import COMMON_RESPONSES, ApiProblem
from rlhf_ledger.api.serialize import stream_bundle
from rlhf_ledger.api.service import get_service
from rlhf_ledger.core.errors import NotFoundError
from rlhf_ledger.export.bundle import MEDIA_TYPE as BUNDLE_MEDIA_TYPE  # the exporter's format (bundle-format.md)

router = APIRouter(prefix="/v1", responses=COMMON_RESPONSES)

_ANCHORED_BUNDLE = Query(False, description="prove to the first anchored checkpoint covering the scope (404 not_anchored if none yet)")
_BUNDLE_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {"content": {BUNDLE_MEDIA_TYPE: {"schema": {"type": "string"}}}, "description": "proof bundle (docs/bundle-format.md)"}
}


@router.get("/logs/{log_id}/entries/{index}/bundle", response_class=StreamingResponse, responses=_BUNDLE_RESPONSE, tags=["bundles"], summary="Proof bundle for one event")
def bundle_event(request: Request, log_id: str = LogId, index: int = Index, anchored: bool = _ANCHORED_BUNDLE,
                 _: tok.Principal = Depends(authenticate)) -> StreamingResponse:
    svc = get_service(request)
    svc.ledger.get_entry(log_id, index)
    gen = stream_bundle(svc, log_id, {"type": "event", "index": index}, anchored=anchored)
    return StreamingResponse(gen, media_type=BUNDLE_MEDIA_TYPE, headers={"Content-Disposition": f'attachment; filename="{log_id}-{index}.rlhfbundle.jsonl"'})


@router.get("/logs/{log_id}/bundle", response_class=StreamingResponse, responses=_BUNDLE_RESPONSE, tags=["bundles"], summary="Proof bundle for a range of entries [start, end)")
def bundle_range(
    request: Request,
    log_id: str = LogId,
    start: int = Query(ge=0, le=m.MAX_INDEX),
    end: int | None = Query(None, ge=1, le=m.MAX_INDEX, description="default: start + the page limit, at most the log size"),
    anchored: bool = _ANCHORED_BUNDLE,
    _: tok.Principal = Depends(authenticate),
) -> StreamingResponse:
    svc = get_service(request)
    size = svc.ledger.log_info(log_id).size
    cap = svc.settings.max_bundle_range
    if end is None:
        end = min(start + cap, size)
    if not start < end <= size:
        raise ApiProblem(422, "invalid_range", f"need start < end <= {size} (the log size); got start {start}, end {end}")
    if end - start > cap:
        raise ApiProblem(422, "range_too_large", f"a range bundle holds at most {cap} entries; got {end - start}. "
                         f"Page through the log: ?start={start}&end={start + cap}, then follow the Link header")
    gen = stream_bundle(svc, log_id, {"type": "range", "start": start, "end": end}, anchored=anchored)
    headers = {"Content-Disposition": f'attachment; filename="{log_id}-{start}-{end}.rlhfbundle.jsonl"'}
    if end < size:
        nxt = f"{request.url.path}?start={end}&end={min(end + cap, size)}" + ("&anchored=true" if anchored else "")
        headers["Link"] = f'<{nxt}>; rel="next"'
    return StreamingResponse(gen, media_type=BUNDLE_MEDIA_TYPE, headers=headers)


@router.get("/logs/{log_id}/runs/{run_id}/bundle", response_class=StreamingResponse, responses=_BUNDLE_RESPONSE, tags=["bundles"], summary="Proof bundle for a whole run")
def bundle_run(request: Request, log_id: str = LogId, run_id: str = Path(pattern=m.LOG_ID_PATTERN), anchored: bool = _ANCHORED_BUNDLE,
               _: tok.Principal = Depends(authenticate)) -> StreamingResponse:
    svc = get_service(request)
    if not svc.ledger.has_run(log_id, run_id):
        svc.ledger.log_info(log_id)
        raise NotFoundError(f"no events of run {run_id!r}", where=f"log {log_id!r}")
    gen = stream_bundle(svc, log_id, {"type": "run", "run_id": run_id}, anchored=anchored)
    return StreamingResponse(gen, media_type=BUNDLE_MEDIA_TYPE, headers={"Content-Disposition": f'attachment; filename="{log_id}-{run_id}.rlhfbundle.jsonl"'})
