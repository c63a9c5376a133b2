"""POST /v1/logs/{log_id}/events: a batch of signed events (submitter bound to the log).

The handler reads the body itself, after authorisation, to give precise JSON errors; then the
token's scope is checked per event (producer keys, runs) and the batch's CPU cost is capped.
"""

from __future__ import annotations

import json
from typing import Any

import orjson
from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from rlhf_ledger.api import models as m
from rlhf_ledger.api import tokens as tok
from rlhf_ledger.api.bodies import read_json
from rlhf_ledger.api.config import Settings
from rlhf_ledger.api.deps import LogId, body_schema, require, run_allowed
from rlhf_ledger.api.problems import COMMON_RESPONSES, ApiProblem
from rlhf_ledger.api.service import get_service
from rlhf_ledger.core.jcs import is_fast
from rlhf_ledger.core.roles import Role
from rlhf_ledger.store.ledger import BatchRejected

router = APIRouter(prefix="/v1", responses=COMMON_RESPONSES)


def _slow_units(settings: Settings, ev: Any, openings: Any) -> int:
    """Batch units of an event on the pure-Python RFC 8785 path: that path costs about 1.5 us per
    byte against 25 ns on the fast one (measured, docs/security.md), so it is charged by size."""
    try:
        size = len(orjson.dumps([ev, openings]))
    except (TypeError, orjson.JSONEncodeError):  # e.g. integers beyond 64 bits
        size = len(json.dumps([ev, openings]))
    return max(settings.slow_event_weight, settings.slow_units_per_kib * -(-size // 1024))


@router.post(
    "/logs/{log_id}/events",
    response_model=m.SubmitOut,
    tags=["submission"],
    summary="Submit a batch of signed events (submitter)",
    openapi_extra=body_schema(m.SubmitIn),
)
async def submit(request: Request, log_id: str = LogId,
                 p: tok.Principal = Depends(require(Role.SUBMITTER, bound_to_log=True))) -> JSONResponse:
    svc = get_service(request)
    doc = await read_json(request, limit=svc.settings.max_body_bytes, max_values=svc.settings.max_json_values)
    if not isinstance(doc, dict) or set(doc) != {"events"}:
        raise ApiProblem(422, "invalid_request", 'the body must be an object with exactly one member, "events"')
    events = doc["events"]
    limit = svc.settings.max_batch
    if not isinstance(events, list) or not 1 <= len(events) <= limit:
        n = len(events) if isinstance(events, list) else None
        raise ApiProblem(422, "invalid_request", f'"events" must be an array of 1 to {limit} envelopes' + (f", got {n}" if n is not None else ""))
    unbound, runs_unbound = [], []
    units = 0
    for i, env in enumerate(events):
        ev = env.get("event") if isinstance(env, dict) else None
        producer = ev.get("producer") if isinstance(ev, dict) else None
        if isinstance(producer, str) and producer not in p.producer_key_ids:
            unbound.append({"index": i, "code": "producer_not_bound", "where": f"events[{i}].event.producer",
                            "detail": f"producer {producer[:64]} is not one of this token's keys"})
        run_id = ev.get("run_id") if isinstance(ev, dict) else None
        if isinstance(run_id, str) and not run_allowed(p, run_id):
            runs_unbound.append({"index": i, "code": "run_not_bound", "where": f"events[{i}].event.run_id",
                                 "detail": f"run {run_id[:128]!r} is not in this token's run scope"})
        # CPU cost: an event whose canonical form needs the pure-Python RFC 8785 encoder costs
        # as much as many fast ones (docs/api.md "Cost caps"), so it counts that many.
        openings = env.get("openings") if isinstance(env, dict) else None
        units += 1 if is_fast(ev) and (openings is None or is_fast(openings)) else _slow_units(svc.settings, ev, openings)
    if unbound:
        raise svc.deny(request, p, 403, "producer_not_bound",
                       f"{len(unbound)} event(s) are signed by producer keys this token is not bound to", errors=unbound)
    if runs_unbound:
        raise svc.deny(request, p, 403, "run_not_bound",
                       f"{len(runs_unbound)} event(s) belong to runs this token may not write", errors=runs_unbound)
    if units > limit:
        raise ApiProblem(422, "batch_too_costly", f"the batch costs {units} units, more than the limit of {limit} "
                         f"(an event on the slow canonicalisation path counts {svc.settings.slow_event_weight}, or "
                         f"{svc.settings.slow_units_per_kib} per KiB if more); send fewer events per request")
    await run_in_threadpool(svc.ledger.log_info, log_id)
    try:
        results = await run_in_threadpool(svc.ledger.append, events, log_id=log_id, executor=svc.executor)
    except BatchRejected as e:
        for _, err in e.errors:
            svc.metrics.rejected.labels(err.code).inc()
        items = [{"index": i, "code": err.code, "where": err.where, "detail": err.message} for i, err in e.errors]
        raise ApiProblem(422, "batch_rejected", f"{len(items)} of {len(events)} event(s) refused; nothing was stored", errors=items) from None
    new = sum(1 for r in results if not r.duplicate)
    svc.metrics.accepted.labels(log_id).inc(new)
    if new < len(results):
        svc.metrics.duplicates.labels(log_id).inc(len(results) - new)
    return JSONResponse({"results": [r.as_json() for r in results]})
