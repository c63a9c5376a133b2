"""The ledger HTTP service: FastAPI app factory and routes under /v1 (docs/api.md).

Run with `uvicorn --factory api.app:create_app` (what `rlhf-ledger serve` does); settings come
from the environment (api/config.py). Handlers that touch the database are plain `def`s, run in
the thread pool; the submission handler reads the body itself to give precise JSON errors.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import orjson
from fastapi import APIRouter, Depends, FastAPI, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from rlhf_ledger.api import limits
from rlhf_ledger.api import models as m
from rlhf_ledger.api import tokens as tok
from rlhf_ledger.api.audit import Denial, DenialRecorder, ensure_audit_log
from rlhf_ledger.api.bodies import ADMIN_MAX_BODY_BYTES, read_json
from rlhf_ledger.api.config import Settings
from rlhf_ledger.api.metrics import Metrics
from rlhf_ledger.api.middleware import BodyTooLarge, GuardMiddleware
from rlhf_ledger.api.ops_metrics import OpsCollector, fork_check_all, install_chain_witness
from rlhf_ledger.api.problems import COMMON_RESPONSES, ApiProblem, Problem, problem_response
from rlhf_ledger.api.ratelimit import TokenBuckets
from rlhf_ledger.core.anchor_status import IN_FLIGHT, SETTLED, AnchorStatus
from rlhf_ledger.core.errors import (
    ConflictError,
    EventError,
    LedgerError,
    NotFoundError,
    ProofError,
    RevokedKeyError,
    RunEndedError,
    UnknownKeyError,
)
from rlhf_ledger.core.events import envelope_of
from rlhf_ledger.core.jcs import is_fast
from rlhf_ledger.core.keys import unb64
from rlhf_ledger.core.redact import redact_secrets
from rlhf_ledger.core.roles import Role
from rlhf_ledger.export.bundle import MEDIA_TYPE as BUNDLE_MEDIA_TYPE  # the exporter's format (bundle-format.md)
from rlhf_ledger.store.anchors import AnchorRecord
from rlhf_ledger.store.database import UNAVAILABLE as DATABASE_UNAVAILABLE
from rlhf_ledger.store.ledger import BatchRejected, EntryRecord, Ledger
from rlhf_ledger.store.payloads import PayloadError

log = logging.getLogger("api")

LogId = Path(pattern=m.LOG_ID_PATTERN, description="log id (the API does not address ids containing '/')")
Index = Path(ge=0, le=m.MAX_INDEX)


def _b64(b: bytes) -> str:
    return base64.b64encode(b).decode("ascii")


def _utc(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


class Service:
    """Per-process state shared by the handlers."""

    def __init__(self, ledger: Ledger, settings: Settings, *, owns_ledger: bool):
        self.ledger = ledger
        self.settings = settings
        self.owns_ledger = owns_ledger
        self.metrics = Metrics(ledger)
        self.metrics.registry.register(OpsCollector(ledger))  # fork guard, replica, anchor rows
        self.buckets = TokenBuckets(settings.rate_per_second, settings.rate_burst)
        self.executor = ThreadPoolExecutor(max(1, settings.verify_threads), thread_name_prefix="verify")
        self.recorder: DenialRecorder | None = None
        self.service_key_id: str | None = None
        # Failed authentications (unknown or malformed tokens) have their own, stricter bucket
        # per client address: each one costs a hash lookup and feeds the denial aggregate.
        self.auth_failures = TokenBuckets(settings.auth_fail_rate, settings.auth_fail_burst)
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None

    def start(self) -> None:
        install_chain_witness(self.ledger)
        for why in fork_check_all(self.ledger):  # at start: a restored database says so at once
            log.error("refusing to sign: %s", why)
        for info in self.ledger.list_logs():  # producers registered before key events existed
            try:
                if n := self.ledger.migrate_keys(info.log_id):
                    log.info("log %s: wrote %d legacy key event(s) (docs/keys.md)", info.log_id, n)
            except LedgerError as e:
                log.error("log %s: producers' key events not written: %s", info.log_id, e)
        limits.preload()  # lazily used imports happen now, then process-wide limits are restored
        signer = ensure_audit_log(self.ledger, self.settings.audit_log_id)
        self.service_key_id = signer.key_id
        self.recorder = DenialRecorder(
            self.ledger, signer, self.settings.audit_log_id, window=self.settings.denial_window,
            max_records_per_minute=self.settings.audit_max_records_per_minute, cap_period=self.settings.audit_cap_period,
        )
        self.recorder.start()
        limits.restore_limits()
        if self.settings.checkpoint_interval > 0:
            self._ticker = threading.Thread(target=self._checkpoint_loop, name="checkpointer", daemon=True)
            self._ticker.start()

    def stop(self) -> None:
        self._stop.set()
        if self.recorder is not None:
            self.recorder.stop()
        if self._ticker is not None:
            self._ticker.join(timeout=10)
        self.executor.shutdown(wait=True)
        if self.owns_ledger:
            self.ledger.close()

    def _checkpoint_loop(self) -> None:
        # The time policy of checkpoints (the size policy runs inside append). Every worker may
        # run this: checkpoint() holds the log lock and returns an existing checkpoint as is.
        while not self._stop.wait(self.settings.checkpoint_interval):
            try:
                for info in self.ledger.list_logs():
                    self.ledger.maybe_checkpoint(info.log_id)
            except Exception as e:  # noqa: BLE001 - keep ticking through transient DB errors
                log.warning("checkpoint sweep failed: %s", e)

    # --- access ---------------------------------------------------------------------------

    def deny(self, request: Request, p: tok.Principal, status: int, reason: str, detail: str, errors: list[dict] | None = None) -> ApiProblem:
        self.metrics.denials.labels(str(status), reason).inc()
        client = request.client.host if request.client else ""
        if self.recorder is not None:
            self.recorder.record(
                Denial(
                    ts=time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + ".000000Z",
                    method=request.method,
                    path=request.url.path[:512],
                    status=status,
                    reason=reason,
                    token_id=p.token_id,
                    role=str(p.role),
                    client=client,
                )
            )
        headers = {"WWW-Authenticate": 'Bearer realm="rlhf-ledger"'} if status == 401 else None
        return ApiProblem(status, reason, detail, errors=errors, headers=headers)


def _svc(request: Request) -> Service:
    return request.app.state.service


def authenticate(request: Request) -> tok.Principal:
    """Resolve the bearer token (none = public), then apply the caller's rate limit."""
    svc = _svc(request)
    header = request.headers.get("authorization")
    principal = tok.PUBLIC
    if header is not None:
        # Failed authentications have a stricter bucket per client address. A valid token is
        # never held back by it (an attacker behind the same NAT cannot lock others out); a
        # failure beyond it gets 429 and only a count in that address's denial aggregate.
        client = request.client.host if request.client else "?"
        scheme, _, value = header.partition(" ")
        well_formed = scheme.lower() == "bearer" and bool(value.strip())
        found = tok.lookup(svc.ledger.tokens, value.strip()) if well_formed else None
        if found is None:
            wait = svc.auth_failures.take("ip:" + client)
            if wait > 0:
                svc.metrics.rate_limited.inc()
                if svc.recorder is not None:
                    svc.recorder.count_suppressed(client)
                raise _rate_limited(svc, wait, "too many failed authentications from this client")
            if not well_formed:
                raise svc.deny(request, tok.PUBLIC, 401, "bad_authorization_header", "Authorization must be 'Bearer <token>'")
            raise svc.deny(request, tok.PUBLIC, 401, "unknown_token", "the bearer token is unknown or revoked")
        principal = found
    key = principal.token_id or ("ip:" + (request.client.host if request.client else "?"))
    wait = svc.buckets.take(key)
    if wait > 0:
        svc.metrics.rate_limited.inc()
        raise _rate_limited(svc, wait, f"rate limit of {svc.settings.rate_per_second:g} requests/s exceeded for {key if principal.token_id else 'this client'}")
    return principal


def _rate_limited(svc: Service, wait: float, what: str) -> ApiProblem:
    retry = max(1, int(wait + 0.999))
    return ApiProblem(429, "rate_limited", f"{what}; retry in {retry} s", headers={"Retry-After": str(retry)})


def run_allowed(p: tok.Principal, run_id: str) -> bool:
    """A token's run scope: exact run ids, or prefixes written with a trailing '*'."""
    return tok.run_in_scope(p.run_ids, run_id)


def _slow_units(settings: Settings, ev: Any, openings: Any) -> int:
    """Batch units of an event on the pure-Python RFC 8785 path: that path costs about 1.5 us per
    byte against 25 ns on the fast one (measured, docs/security.md), so it is charged by size."""
    try:
        size = len(orjson.dumps([ev, openings]))
    except (TypeError, orjson.JSONEncodeError):  # e.g. integers beyond 64 bits
        size = len(json.dumps([ev, openings]))
    return max(settings.slow_event_weight, settings.slow_units_per_kib * -(-size // 1024))


def _body_schema(model: type[BaseModel]) -> dict:
    # The body is read by the handler (after authorisation), so FastAPI does not see a model;
    # the published schema still documents it.
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": model.model_json_schema()}}}}


async def admin_body(request: Request, model: type[BaseModel]) -> Any:
    """Read and validate an admin body; called only after require_admin passed."""
    svc = _svc(request)
    doc = await read_json(request, limit=min(ADMIN_MAX_BODY_BYTES, svc.settings.max_body_bytes), max_values=10_000)
    try:
        return model.model_validate(doc)
    except ValidationError as e:
        raise RequestValidationError([{**err, "loc": ("body", *err.get("loc", ()))} for err in e.errors(include_url=False)]) from None


def _need_token(request: Request, p: tok.Principal, what: str) -> None:
    if p.role == Role.PUBLIC:
        raise _svc(request).deny(request, p, 401, "token_required", f"{what} needs a bearer token")


def require_admin(request: Request, p: tok.Principal = Depends(authenticate)) -> tok.Principal:
    _need_token(request, p, "this administrative operation")
    if p.role != Role.ADMIN:
        raise _svc(request).deny(request, p, 403, "admin_required", f"a {p.role} token cannot do administrative operations")
    return p


# --- helpers over the ledger ------------------------------------------------------------------


def _log_out(info) -> dict:
    return {
        "log_id": info.log_id,
        "origin": info.origin,
        "public_key": _b64(info.public_key),
        "vkey": info.vkey,
        "size": info.size,
        "checkpoint_every_events": info.checkpoint_every_events,
        "checkpoint_every_seconds": info.checkpoint_every_seconds,
    }


def _cp_out(cp) -> dict:
    return {"origin": cp.origin, "size": cp.size, "root": _b64(cp.root), "note": cp.note}


def _anchor_out(r: AnchorRecord) -> dict:
    confirmations = None
    if r.evidence_json:
        try:
            ev = json.loads(r.evidence_json)
            c = ev.get("confirmations") if isinstance(ev, dict) else None
            confirmations = c if isinstance(c, int) else None
        except ValueError:
            pass
    return {
        "id": r.id,
        "log_id": r.log_id,
        "status": str(r.status),
        "prev_size": r.prev_size,
        "checkpoint_size": r.checkpoint_size,
        "covered_range": [r.prev_size, r.checkpoint_size],
        "cid": r.cid,
        "chain_id": r.chain_id,
        "contract": r.contract,
        "tx_hash": r.tx_hash,
        "block_number": r.block_number,
        "block_hash": r.block_hash,
        "block_timestamp": r.block_timestamp,
        "log_index": r.log_index,
        "confirmations": confirmations,
        "attempts": r.attempts,
        "error": redact_secrets(r.error) if r.error else r.error,
        "created_at": r.created_at,
        "updated_at": r.updated_at,
    }


def _entry_out(svc: Service, log_id: str, row: EntryRecord, anchored: bool) -> dict:
    ledger = svc.ledger
    t0 = time.perf_counter()
    proof = None
    anchor = ledger.anchors.latest_settled(log_id) if anchored else None
    size: int | None
    if anchored:
        size = anchor.checkpoint_size if anchor is not None and row.idx < anchor.checkpoint_size else None
    else:
        latest = ledger.latest_checkpoint(log_id)
        size = latest.size if latest is not None and row.idx < latest.size else None
    if size is not None:
        n, path = ledger.inclusion_proof(log_id, row.idx, size)
        proof = {
            "tree_size": n,
            "inclusion": [_b64(h) for h in path],
            "checkpoint": _cp_out(ledger.get_checkpoint(log_id, n)),
            "anchor": _anchor_out(anchor) if anchor is not None else None,
        }
    svc.metrics.proof_latency.labels("anchored_inclusion" if anchored else "inclusion").observe(time.perf_counter() - t0)
    return {
        "log_id": log_id,
        "index": row.idx,
        "event_id": row.event_id,
        "leaf_hash": _b64(row.leaf_hash),
        "run_id": row.run_id,
        "producer": row.producer,
        "seq": row.seq,
        "type": row.type,
        "ts": row.ts,
        "appended_at": row.appended_at,
        "envelope": envelope_of(row.entry),
        "proof": proof,
    }


def _stream_bundle(svc: Service, log_id: str, scope: dict, *, anchored: bool = False):
    """Prime the exporter (so errors found before the first line become problems), then stream."""
    from rlhf_ledger.export.bundle import Scope, iter_bundle_lines

    lines = iter(iter_bundle_lines(svc.ledger, log_id, Scope(**scope), require_anchor=anchored))
    first = next(lines)

    def gen():
        yield _line(first)
        for line in lines:
            yield _line(line)

    return gen()


def _line(line: Any) -> bytes:
    if isinstance(line, bytes):
        return line if line.endswith(b"\n") else line + b"\n"
    if isinstance(line, str):
        return (line if line.endswith("\n") else line + "\n").encode()
    return (json.dumps(line, separators=(",", ":"), ensure_ascii=False) + "\n").encode()


# --- routes -----------------------------------------------------------------------------------

router = APIRouter(prefix="/v1", responses=COMMON_RESPONSES)


@router.get("/whoami", response_model=m.Principal, tags=["access"], summary="The caller's role and scope")
def whoami(p: tok.Principal = Depends(authenticate)) -> dict:
    return p.as_json()


@router.get("/logs", response_model=list[m.LogOut], tags=["logs"])
def list_logs(request: Request, _: tok.Principal = Depends(authenticate)) -> list[dict]:
    return [_log_out(i) for i in _svc(request).ledger.list_logs()]


@router.post("/logs", response_model=m.LogOut, status_code=201, tags=["admin"], summary="Create a log (admin)",
             openapi_extra=_body_schema(m.LogCreate))
async def init_log(request: Request, _: tok.Principal = Depends(require_admin)) -> JSONResponse:
    body = await admin_body(request, m.LogCreate)
    info = await run_in_threadpool(
        _svc(request).ledger.init_log, body.log_id, origin=body.origin, checkpoint_every_events=body.checkpoint_every_events,
        checkpoint_every_seconds=body.checkpoint_every_seconds,
    )
    return JSONResponse(_log_out(info), status_code=201)


@router.get("/logs/{log_id}", response_model=m.LogOut, tags=["logs"])
def get_log(request: Request, log_id: str = LogId, _: tok.Principal = Depends(authenticate)) -> dict:
    return _log_out(_svc(request).ledger.log_info(log_id))


@router.get("/logs/{log_id}/producers", response_model=list[m.ProducerOut], tags=["logs"])
def list_producers(request: Request, log_id: str = LogId, _: tok.Principal = Depends(authenticate)) -> list[dict]:
    ledger = _svc(request).ledger
    ledger.log_info(log_id)
    return ledger.producers(log_id)


@router.post("/logs/{log_id}/producers", response_model=m.KeyIdOut, status_code=201, tags=["admin"], summary="Register a producer key (admin)",
             openapi_extra=_body_schema(m.ProducerCreate))
async def register_producer(request: Request, log_id: str = LogId, _: tok.Principal = Depends(require_admin)) -> JSONResponse:
    body = await admin_body(request, m.ProducerCreate)
    try:
        pk = unb64(body.public_key, what="public_key", length=32)
    except ValueError as e:
        raise ApiProblem(422, "invalid_key", str(e), errors=[{"index": None, "code": "invalid_key", "where": "public_key", "detail": str(e)}]) from None
    kid = await run_in_threadpool(_svc(request).ledger.register_producer, log_id, pk, body.label)
    return JSONResponse({"log_id": log_id, "key_id": kid, "status": "active"}, status_code=201)


@router.post("/logs/{log_id}/producers/{key_id}/revoke", response_model=m.KeyIdOut, tags=["admin"], summary="Revoke a producer key (admin)")
def revoke_producer(
    request: Request, log_id: str = LogId, key_id: str = Path(pattern=m.KEY_ID_PATTERN), _: tok.Principal = Depends(require_admin)
) -> dict:
    svc = _svc(request)
    ledger = svc.ledger
    ledger.log_info(log_id)
    if log_id == svc.settings.audit_log_id and key_id == svc.service_key_id:
        # Revoking it would silently stop the denial records (docs/security.md): the service
        # rotates this key itself, at start, when it finds it revoked offline.
        raise ApiProblem(409, "service_key", "the audit service key cannot be revoked over the API; revoke it offline "
                         "(rlhf-ledger revoke-producer) and restart the service, which then rotates it")
    ledger.revoke_producer(log_id, key_id)
    return {"log_id": log_id, "key_id": key_id, "status": "revoked"}


_SUBMIT_BODY = _body_schema(m.SubmitIn)


@router.post(
    "/logs/{log_id}/events",
    response_model=m.SubmitOut,
    tags=["submission"],
    summary="Submit a batch of signed events (submitter)",
    openapi_extra=_SUBMIT_BODY,
)
async def submit(request: Request, log_id: str = LogId, p: tok.Principal = Depends(authenticate)) -> JSONResponse:
    svc = _svc(request)
    _need_token(request, p, "submitting events")
    if p.role != Role.SUBMITTER:
        raise svc.deny(request, p, 403, "submitter_required", f"a {p.role} token cannot submit events")
    if log_id not in p.log_ids:
        raise svc.deny(request, p, 403, "log_not_bound", f"this token may not submit to log {log_id!r}")
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


@router.get("/logs/{log_id}/entries/{index}", response_model=m.EntryOut, tags=["proofs"], summary="An entry with its inclusion proof")
def get_entry(
    request: Request,
    log_id: str = LogId,
    index: int = Index,
    anchored: bool = Query(False, description="prove to the latest anchored checkpoint instead of the latest checkpoint"),
    _: tok.Principal = Depends(authenticate),
) -> JSONResponse:
    svc = _svc(request)
    return JSONResponse(_entry_out(svc, log_id, svc.ledger.get_entry(log_id, index), anchored))


@router.get("/logs/{log_id}/events/{event_id}", response_model=m.EntryOut, tags=["proofs"], summary="An event by id with its inclusion proof")
def get_event(
    request: Request,
    log_id: str = LogId,
    event_id: str = Path(pattern=r"^[0-9a-f]{64}$"),
    anchored: bool = Query(False),
    _: tok.Principal = Depends(authenticate),
) -> JSONResponse:
    svc = _svc(request)
    return JSONResponse(_entry_out(svc, log_id, svc.ledger.find_event(log_id, event_id), anchored))


@router.get(
    "/logs/{log_id}/entries/{index}/tlog-proof",
    response_class=PlainTextResponse,
    tags=["proofs"],
    summary="The entry's proof as a c2sp.org/tlog-proof@v1 file",
    responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}},
)
def get_tlog_proof(
    request: Request, log_id: str = LogId, index: int = Index, anchored: bool = Query(False), _: tok.Principal = Depends(authenticate)
) -> PlainTextResponse:
    svc = _svc(request)
    t0 = time.perf_counter()
    size = None
    if anchored:
        a = svc.ledger.anchors.latest_settled(log_id)
        if a is None or index >= a.checkpoint_size:
            raise ApiProblem(404, "not_anchored", f"entry {index} is not covered by an anchored checkpoint yet")
        size = a.checkpoint_size
    else:
        svc.ledger.get_entry(log_id, index)
        cp = svc.ledger.latest_checkpoint(log_id)
        if cp is None or index >= cp.size:
            raise ApiProblem(404, "not_checkpointed", f"entry {index} is not covered by a checkpoint yet")
    text = svc.ledger.tlog_proof(log_id, index, size)
    svc.metrics.proof_latency.labels("tlog_proof").observe(time.perf_counter() - t0)
    return PlainTextResponse(text)


@router.get("/logs/{log_id}/consistency", response_model=m.ConsistencyOut, tags=["proofs"], summary="RFC 9162 consistency proof")
def get_consistency(
    request: Request,
    log_id: str = LogId,
    first: int = Query(ge=0, le=m.MAX_INDEX),
    second: int = Query(ge=0, le=m.MAX_INDEX),
    _: tok.Principal = Depends(authenticate),
) -> dict:
    svc = _svc(request)
    t0 = time.perf_counter()
    proof = svc.ledger.consistency_proof(log_id, first, second)
    svc.metrics.proof_latency.labels("consistency").observe(time.perf_counter() - t0)
    return {"first": first, "second": second, "proof": [_b64(h) for h in proof]}


@router.get("/logs/{log_id}/checkpoints", response_model=list[m.CheckpointOut], tags=["checkpoints"])
def list_checkpoints(
    request: Request,
    log_id: str = LogId,
    after: int = Query(-1, ge=-1, le=m.MAX_INDEX, description="only sizes greater than this"),
    limit: int = Query(100, ge=1, le=1000),
    _: tok.Principal = Depends(authenticate),
) -> list[dict]:
    return [_cp_out(c) for c in _svc(request).ledger.list_checkpoints(log_id, after=after, limit=limit)]


@router.get("/logs/{log_id}/checkpoints/latest", response_model=m.CheckpointOut, tags=["checkpoints"])
def latest_checkpoint(request: Request, log_id: str = LogId, _: tok.Principal = Depends(authenticate)) -> dict:
    cp = _svc(request).ledger.latest_checkpoint(log_id)
    if cp is None:
        raise NotFoundError("the log has no checkpoint yet", where=f"log {log_id!r}")
    return _cp_out(cp)


@router.get("/logs/{log_id}/checkpoints/{size}", response_model=m.CheckpointOut, tags=["checkpoints"])
def get_checkpoint(request: Request, log_id: str = LogId, size: int = Path(ge=0, le=m.MAX_INDEX), _: tok.Principal = Depends(authenticate)) -> dict:
    return _cp_out(_svc(request).ledger.get_checkpoint(log_id, size))


@router.get(
    "/logs/{log_id}/checkpoint",
    response_class=PlainTextResponse,
    tags=["checkpoints"],
    summary="The latest signed checkpoint note (C2SP text, for witnesses)",
    responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}},
)
def latest_note(request: Request, log_id: str = LogId, _: tok.Principal = Depends(authenticate)) -> PlainTextResponse:
    cp = _svc(request).ledger.latest_checkpoint(log_id)
    if cp is None:
        raise NotFoundError("the log has no checkpoint yet", where=f"log {log_id!r}")
    return PlainTextResponse(cp.note)


_ANCHOR_STATUS_PATTERN = "^(" + "|".join(AnchorStatus) + ")$"


@router.get("/logs/{log_id}/anchors", response_model=list[m.AnchorOut], tags=["anchors"])
def list_anchors(
    request: Request,
    log_id: str = LogId,
    status: str | None = Query(None, pattern=_ANCHOR_STATUS_PATTERN),
    after_id: int = Query(0, ge=0, le=m.MAX_INDEX),
    limit: int = Query(100, ge=1, le=1000),
    _: tok.Principal = Depends(authenticate),
) -> list[dict]:
    ledger = _svc(request).ledger
    ledger.log_info(log_id)
    rows = ledger.anchors.page(log_id, after_id=after_id, status=AnchorStatus(status) if status else None, limit=limit)
    return [_anchor_out(r) for r in rows]


@router.get("/logs/{log_id}/anchors/{anchor_id}", response_model=m.AnchorOut, tags=["anchors"])
def get_anchor(request: Request, log_id: str = LogId, anchor_id: int = Path(ge=0, le=m.MAX_INDEX), _: tok.Principal = Depends(authenticate)) -> dict:
    found = _svc(request).ledger.anchors.get(log_id, anchor_id)
    if found is None:
        raise NotFoundError(f"no anchor {anchor_id}", where=f"log {log_id!r}")
    return _anchor_out(found)


@router.get("/logs/{log_id}/entries/{index}/anchor", response_model=m.EntryAnchorOut, tags=["anchors"], summary="Which anchor covers an entry, since when")
def entry_anchor(request: Request, log_id: str = LogId, index: int = Index, _: tok.Principal = Depends(authenticate)) -> dict:
    ledger = _svc(request).ledger
    ledger.get_entry(log_id, index)
    rows = ledger.anchors.covering(log_id, index)
    done = [r for r in rows if r.status in SETTLED]
    # The first confirmed anchor with a larger tree is the one that first covered the entry.
    first = done[0] if done else None
    pending = [r for r in rows if r.status in IN_FLIGHT]
    since = None
    if first is not None:
        since = float(first.block_timestamp) if first.block_timestamp is not None else first.updated_at
    return {
        "index": index,
        "covered": first is not None,
        "since": since,
        "anchor": _anchor_out(first) if first is not None else None,
        "pending": [_anchor_out(r) for r in pending],
    }


_ANCHORED_BUNDLE = Query(False, description="prove to the first anchored checkpoint covering the scope (404 not_anchored if none yet)")
_BUNDLE_RESPONSE = {200: {"content": {BUNDLE_MEDIA_TYPE: {"schema": {"type": "string"}}}, "description": "proof bundle (docs/bundle-format.md)"}}


@router.get("/logs/{log_id}/entries/{index}/bundle", response_class=StreamingResponse, responses=_BUNDLE_RESPONSE, tags=["bundles"], summary="Proof bundle for one event")
def bundle_event(request: Request, log_id: str = LogId, index: int = Index, anchored: bool = _ANCHORED_BUNDLE,
                 _: tok.Principal = Depends(authenticate)) -> StreamingResponse:
    svc = _svc(request)
    svc.ledger.get_entry(log_id, index)
    gen = _stream_bundle(svc, log_id, {"type": "event", "index": index}, anchored=anchored)
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
    svc = _svc(request)
    size = svc.ledger.log_info(log_id).size
    cap = svc.settings.max_bundle_range
    if end is None:
        end = min(start + cap, size)
    if not start < end <= size:
        raise ApiProblem(422, "invalid_range", f"need start < end <= {size} (the log size); got start {start}, end {end}")
    if end - start > cap:
        raise ApiProblem(422, "range_too_large", f"a range bundle holds at most {cap} entries; got {end - start}. "
                         f"Page through the log: ?start={start}&end={start + cap}, then follow the Link header")
    gen = _stream_bundle(svc, log_id, {"type": "range", "start": start, "end": end}, anchored=anchored)
    headers = {"Content-Disposition": f'attachment; filename="{log_id}-{start}-{end}.rlhfbundle.jsonl"'}
    if end < size:
        nxt = f"{request.url.path}?start={end}&end={min(end + cap, size)}" + ("&anchored=true" if anchored else "")
        headers["Link"] = f'<{nxt}>; rel="next"'
    return StreamingResponse(gen, media_type=BUNDLE_MEDIA_TYPE, headers=headers)


@router.get("/logs/{log_id}/runs/{run_id}/bundle", response_class=StreamingResponse, responses=_BUNDLE_RESPONSE, tags=["bundles"], summary="Proof bundle for a whole run")
def bundle_run(request: Request, log_id: str = LogId, run_id: str = Path(pattern=m.LOG_ID_PATTERN), anchored: bool = _ANCHORED_BUNDLE,
               _: tok.Principal = Depends(authenticate)) -> StreamingResponse:
    svc = _svc(request)
    if not svc.ledger.has_run(log_id, run_id):
        svc.ledger.log_info(log_id)
        raise NotFoundError(f"no events of run {run_id!r}", where=f"log {log_id!r}")
    gen = _stream_bundle(svc, log_id, {"type": "run", "run_id": run_id}, anchored=anchored)
    return StreamingResponse(gen, media_type=BUNDLE_MEDIA_TYPE, headers={"Content-Disposition": f'attachment; filename="{log_id}-{run_id}.rlhfbundle.jsonl"'})


@router.get("/logs/{log_id}/entries/{index}/payload", response_model=m.PayloadOut, tags=["payloads"], summary="Decrypted openings of an entry (auditor of its run)")
def get_payload(request: Request, log_id: str = LogId, index: int = Index, p: tok.Principal = Depends(authenticate)) -> dict:
    svc = _svc(request)
    _need_token(request, p, "reading payloads")
    if p.role != Role.AUDITOR:
        raise svc.deny(request, p, 403, "auditor_required", f"a {p.role} token cannot read payloads")
    if log_id not in p.log_ids:
        raise svc.deny(request, p, 403, "log_not_bound", f"this token may not read payloads of log {log_id!r}")
    row = svc.ledger.get_entry(log_id, index)
    if row.run_id not in p.run_ids:
        raise svc.deny(request, p, 403, "run_not_bound", f"this token may not read payloads of run {row.run_id!r}")
    opened = svc.ledger.read_openings(log_id, index)
    if opened is not None and opened.run_erased:
        raise PayloadError("the run's data key was erased: payload unreadable", where=f"entry {index}")  # 410
    return {"index": index, "event_id": row.event_id, "run_id": row.run_id,
            "openings": None if opened is None else opened.openings, "erased": {} if opened is None else opened.erased}


@router.post("/tokens", response_model=m.TokenCreated, status_code=201, tags=["admin"], summary="Mint a token (admin); the token is shown once",
             openapi_extra=_body_schema(m.TokenCreate))
async def create_token(request: Request, p: tok.Principal = Depends(require_admin)) -> JSONResponse:
    body = await admin_body(request, m.TokenCreate)
    text, principal = await run_in_threadpool(
        tok.create_token, _svc(request).ledger.tokens, body.role, label=body.label, log_ids=body.log_ids,
        producer_key_ids=body.producer_key_ids, run_ids=body.run_ids, created_by=p.token_id,
    )
    out = principal.as_json()
    out.update(token=text, created_by=p.token_id)
    return JSONResponse(out, status_code=201)


@router.get("/tokens", response_model=list[m.TokenOut], tags=["admin"])
def list_tokens(request: Request, _: tok.Principal = Depends(require_admin)) -> list[dict]:
    return tok.list_tokens(_svc(request).ledger.tokens)


@router.post("/tokens/{token_id}/revoke", response_model=m.TokenOut, tags=["admin"])
def revoke_token(request: Request, token_id: str = Path(pattern=r"^[0-9a-f]{16}$"), _: tok.Principal = Depends(require_admin)) -> dict:
    tokens = _svc(request).ledger.tokens
    tok.revoke_token(tokens, token_id)
    return next(t for t in tok.list_tokens(tokens) if t["token_id"] == token_id)


# --- errors -----------------------------------------------------------------------------------

_LEDGER_STATUS: list[tuple[type, int]] = [
    (NotFoundError, 404),
    (ConflictError, 409),
    (RunEndedError, 409),
    (RevokedKeyError, 409),
    (UnknownKeyError, 404),
    (EventError, 422),
    (ProofError, 422),
]


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiProblem)
    async def _api_problem(request: Request, exc: ApiProblem) -> Response:
        return problem_response(request, exc.status, exc.code, exc.detail, errors=exc.errors, headers=exc.headers, title=exc.title)

    @app.exception_handler(LedgerError)
    async def _ledger_error(request: Request, exc: LedgerError) -> Response:
        status = next((s for cls, s in _LEDGER_STATUS if isinstance(exc, cls)), None)
        if status is None:
            status = 503 if exc.code in ("no_passphrase", "key_file_error", "signing_refused") else 422
        if exc.code == "payload_error" and "erased" in exc.message:
            status = 410
        if exc.code in ("not_anchored", "not_checkpointed"):  # not yet: the entry exists, its proof does not
            status = 404
        errors = [{"index": None, "code": exc.code, "where": exc.where, "detail": redact_secrets(exc.message)}] if exc.where else None
        return problem_response(request, status, exc.code, redact_secrets(str(exc)), errors=errors)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> Response:
        errs = exc.errors()
        bad_json = [e for e in errs if e.get("type") == "json_invalid"]
        if bad_json:
            ctx = bad_json[0].get("ctx") or {}
            return problem_response(request, 400, "malformed_json", f"malformed JSON: {ctx.get('error', bad_json[0].get('msg'))}")
        items = []
        for e in errs:
            loc = [str(x) for x in e.get("loc", ())]
            items.append({"index": None, "code": str(e.get("type", "invalid")), "where": ".".join(loc), "detail": str(e.get("msg", ""))})
        first = items[0]
        more = f" (and {len(items) - 1} more)" if len(items) > 1 else ""
        return problem_response(request, 422, "invalid_request", f"{first['where']}: {first['detail']}{more}", errors=items)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        if isinstance(exc.__cause__, BodyTooLarge):  # FastAPI wraps body-read errors in a 400
            return await _too_large(request, exc.__cause__)
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, f"http_{exc.status_code}")
        detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        if exc.status_code == 404 and detail == "Not Found":
            detail = f"no route for {request.method} {request.url.path}"
        if exc.status_code == 405:
            detail = f"method {request.method} is not allowed on {request.url.path}"
        return problem_response(request, exc.status_code, code, detail, headers=getattr(exc, "headers", None))

    @app.exception_handler(BodyTooLarge)
    async def _too_large(request: Request, exc: BodyTooLarge) -> Response:
        drain = request.scope.get("rlhf.drain")
        if drain is not None:
            await drain()
        limit = request.app.state.service.settings.max_body_bytes
        return problem_response(request, 413, "body_too_large", f"request body exceeds the limit of {limit} bytes")

    async def _database_unavailable(request: Request, exc: Exception) -> Response:
        # The database went away (failover, restart, network) or a transient lock/deadlock:
        # nothing was completed, and the same request can succeed later. One log line, no traceback.
        first = str(getattr(exc, "orig", None) or exc).strip().splitlines() or [type(exc).__name__]
        log.warning("database unavailable on %s %s: %s", request.method, request.url.path, redact_secrets(first[0][:300]))
        return problem_response(request, 503, "database_unavailable",
                                "the database does not answer; the request was not completed, retry later",
                                headers={"Retry-After": "2"})

    for exc_type in DATABASE_UNAVAILABLE:  # the store's "database did not answer" errors
        app.add_exception_handler(exc_type, _database_unavailable)

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return problem_response(request, 500, "internal", "internal error; the request was not completed (see server log)")


# --- the app ----------------------------------------------------------------------------------


def create_app(ledger: Ledger | None = None, settings: Settings | None = None) -> FastAPI:
    """Build the service. With no ledger, open the one the settings (environment) point at."""
    settings = settings or Settings.from_env()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        owns = ledger is None
        lg = ledger if ledger is not None else Ledger.open(settings.data_dir, settings.database_url)
        svc = Service(lg, settings, owns_ledger=owns)
        await run_in_threadpool(svc.start)
        app.state.service = svc
        try:
            yield
        finally:
            await run_in_threadpool(svc.stop)

    app = FastAPI(
        title="RLHF provenance ledger",
        version="1.0.0",
        description="Submission of signed audit events, Merkle proofs, checkpoints, anchors and proof bundles. See docs/api.md.",
        lifespan=lifespan,
        docs_url=None,  # /docs and /redoc are served with local assets (api/docs_offline.py)
        redoc_url=None,
    )
    app.include_router(router)
    from rlhf_ledger.api.runs_routes import (
        make_router as runs_router,  # GET /v1/logs/{log_id}/runs (ledger/run_list.py)
    )

    app.include_router(runs_router(authenticate, LogId), prefix="/v1")
    from rlhf_ledger.api.docs_offline import install_offline_docs

    install_offline_docs(app)

    @app.get("/healthz", response_model=m.Health, tags=["ops"], responses=COMMON_RESPONSES)
    def healthz() -> dict:
        return {"status": "ok"}

    @app.get("/readyz", response_model=m.Health, tags=["ops"], responses=COMMON_RESPONSES)
    def readyz(request: Request) -> Response:
        try:
            request.app.state.service.ledger.ping()  # a read: never queued behind an append (SQLite)
            refusals = fork_check_all(request.app.state.service.ledger)
        except Exception as e:  # noqa: BLE001 - any DB failure means not ready
            return problem_response(request, 503, "not_ready", redact_secrets(f"database check failed: {type(e).__name__}: {str(e).splitlines()[0][:200]}"))
        if refusals:  # a log refusing to sign must not take appends (docs/operations.md)
            return problem_response(request, 503, "log_refusing_to_sign", "; ".join(refusals)[:2000])
        return JSONResponse({"status": "ready"})

    @app.get(
        "/metrics", tags=["ops"], response_class=PlainTextResponse, responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}, **COMMON_RESPONSES}
    )
    def metrics(request: Request) -> Response:
        return Response(generate_latest(request.app.state.service.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    _install_error_handlers(app)

    def openapi() -> dict:
        if app.openapi_schema is None:
            from fastapi.openapi.utils import get_openapi

            schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
            comps = schema.setdefault("components", {}).setdefault("schemas", {})
            comps["Problem"] = Problem.model_json_schema(ref_template="#/components/schemas/{model}")
            for name, sub in comps["Problem"].pop("$defs", {}).items():
                comps.setdefault(name, sub)
            # FastAPI adds its own 422 (HTTPValidationError, application/json): ours is a Problem.
            for path in schema.get("paths", {}).values():
                for op in path.values():
                    if isinstance(op, dict) and "responses" in op:
                        op["responses"]["422"] = COMMON_RESPONSES[422]
            schema.setdefault("components", {}).setdefault("securitySchemes", {})["bearer"] = {"type": "http", "scheme": "bearer"}
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    app.add_middleware(GuardMiddleware, max_body_bytes=settings.max_body_bytes, timeout=settings.request_timeout, exempt_timeout=())
    return app
