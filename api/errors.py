"""Errors as problems (RFC 9457, api/problems.py): which status each error answers with.

The store's and the core's errors carry a stable `code` (the problem's type) and `where`; their
status comes from their class, in ONE table (`STATUS_BY_TYPE`, first match wins). Nothing is
decided by an error's message text.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from rlhf_ledger.api.middleware import BodyTooLarge
from rlhf_ledger.api.problems import ApiProblem, problem_response
from rlhf_ledger.core.errors import (
    ConflictError,
    EventError,
    KeyFileError,
    LedgerError,
    NoPassphraseError,
    NotCoveredYetError,
    NotFoundError,
    ProofError,
    RevokedKeyError,
    RunEndedError,
    UnknownKeyError,
)
from rlhf_ledger.core.redact import redact_secrets
from rlhf_ledger.store.database import UNAVAILABLE as DATABASE_UNAVAILABLE
from rlhf_ledger.store.fork_guard import SigningRefused
from rlhf_ledger.store.payloads import ErasedError

log = logging.getLogger("api")

# A LedgerError's status by its class; an error of none of these is refused input (422).
STATUS_BY_TYPE: tuple[tuple[type[LedgerError], int], ...] = (
    (NotFoundError, 404),
    (ConflictError, 409),
    (RunEndedError, 409),
    (RevokedKeyError, 409),
    (UnknownKeyError, 404),
    (EventError, 422),
    (ProofError, 422),
    (ErasedError, 410),  # the data existed and was erased: gone for good
    (SigningRefused, 503),  # the server's state, not the request (docs/operations.md)
    (KeyFileError, 503),
    (NoPassphraseError, 503),  # the server was started without its passphrase
    (NotCoveredYetError, 404),  # the entry exists; no (anchored) checkpoint covers it yet
)



def ledger_status(exc: LedgerError) -> int:
    for cls, status in STATUS_BY_TYPE:
        if isinstance(exc, cls):
            return status
    return 422


async def _api_problem(request: Request, exc: ApiProblem) -> Response:
    return problem_response(request, exc.status, exc.code, exc.detail, errors=exc.errors, headers=exc.headers, title=exc.title)


async def _ledger_error(request: Request, exc: LedgerError) -> Response:
    errors = [{"index": None, "code": exc.code, "where": exc.where, "detail": redact_secrets(exc.message)}] if exc.where else None
    return problem_response(request, ledger_status(exc), exc.code, redact_secrets(str(exc)), errors=errors)


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


async def _internal(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return problem_response(request, 500, "internal", "internal error; the request was not completed (see server log)")


# Handlers by exception class (Starlette picks the nearest class in the exception's MRO).
HANDLERS: tuple[tuple[type[Exception], Callable[..., Awaitable[Response]]], ...] = (
    (ApiProblem, _api_problem),
    (LedgerError, _ledger_error),
    (RequestValidationError, _validation),
    (StarletteHTTPException, _http),
    (BodyTooLarge, _too_large),
    *((exc_type, _database_unavailable) for exc_type in DATABASE_UNAVAILABLE),  # the store's "database did not answer"
    (Exception, _internal),
)


def install_error_handlers(app: FastAPI) -> None:
    for exc_type, handler in HANDLERS:
        app.add_exception_handler(exc_type, handler)
