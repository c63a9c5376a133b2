"""Who may call: authentication, the per-caller rate limit and the one role check, `require`.

Every route depends on `authenticate` (public reads) or on `require(role, ...)` (everything that
needs a token); no route checks tokens itself. A refusal is a problem (401/403) that is counted
and recorded as a signed audit-log event (Service.deny, docs/api.md "Roles").
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fastapi import Depends, Path, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError

from rlhf_ledger.api import models as m
from rlhf_ledger.api import tokens as tok
from rlhf_ledger.api.bodies import ADMIN_MAX_BODY_BYTES, read_json
from rlhf_ledger.api.problems import ApiProblem
from rlhf_ledger.api.service import Service, get_service
from rlhf_ledger.core.roles import Role

# Path parameters shared by the routers.
LogId = Path(pattern=m.LOG_ID_PATTERN, description="log id (the API does not address ids containing '/')")
Index = Path(ge=0, le=m.MAX_INDEX)


def authenticate(request: Request) -> tok.Principal:
    """Resolve the bearer token (none = public), then apply the caller's rate limit."""
    svc = get_service(request)
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
                raise _rate_limited(wait, "too many failed authentications from this client")
            if not well_formed:
                raise svc.deny(request, tok.PUBLIC, 401, "bad_authorization_header", "Authorization must be 'Bearer <token>'")
            raise svc.deny(request, tok.PUBLIC, 401, "unknown_token", "the bearer token is unknown or revoked")
        principal = found
    key = principal.token_id or ("ip:" + (request.client.host if request.client else "?"))
    wait = svc.buckets.take(key)
    if wait > 0:
        svc.metrics.rate_limited.inc()
        raise _rate_limited(wait, f"rate limit of {svc.settings.rate_per_second:g} requests/s exceeded for {key if principal.token_id else 'this client'}")
    return principal


def _rate_limited(wait: float, what: str) -> ApiProblem:
    retry = max(1, int(wait + 0.999))
    return ApiProblem(429, "rate_limited", f"{what}; retry in {retry} s", headers={"Retry-After": str(retry)})


@dataclass(frozen=True)
class _Action:
    """What a role's token is for, in the words of its refusals."""

    needs_token: str  # "<needs_token> needs a bearer token"
    verb: str  # "a <role> token cannot <verb>"
    on_log: str = ""  # "this token may not <on_log> log '<log_id>'"


_ACTIONS = {
    Role.ADMIN: _Action("this administrative operation", "do administrative operations"),
    Role.SUBMITTER: _Action("submitting events", "submit events", "submit to"),
    Role.AUDITOR: _Action("reading payloads", "read payloads", "read payloads of"),
}


def require(role: Role, *, bound_to_log: bool = False) -> Callable[..., tok.Principal]:
    """A dependency that lets through only tokens of `role` (401 without a token, 403 with
    another role's) and, with `bound_to_log`, only tokens bound to the path's `log_id` (403).
    Runs before the route's own parameters are validated, like every dependency."""
    action = _ACTIONS[role]

    def check(request: Request, p: tok.Principal = Depends(authenticate)) -> tok.Principal:
        svc = get_service(request)
        if p.role == Role.PUBLIC:
            raise svc.deny(request, p, 401, "token_required", f"{action.needs_token} needs a bearer token")
        if p.role != role:
            raise svc.deny(request, p, 403, f"{role}_required", f"a {p.role} token cannot {action.verb}")
        if bound_to_log:
            log_id = request.path_params["log_id"]
            if log_id not in p.log_ids:
                raise svc.deny(request, p, 403, "log_not_bound", f"this token may not {action.on_log} log {log_id!r}")
        return p

    return check


def run_allowed(p: tok.Principal, run_id: str) -> bool:
    """A token's run scope: exact run ids, or prefixes written with a trailing '*'."""
    return tok.run_in_scope(p.run_ids, run_id)


def body_schema(model: type[BaseModel]) -> dict:
    # The body is read by the handler (after authorisation), so FastAPI does not see a model;
    # the published schema still documents it.
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": model.model_json_schema()}}}}


async def admin_body(request: Request, model: type[BaseModel]) -> Any:
    """Read and validate an admin body; called only after require(Role.ADMIN) passed."""
    svc: Service = get_service(request)
    doc = await read_json(request, limit=min(ADMIN_MAX_BODY_BYTES, svc.settings.max_body_bytes), max_values=10_000)
    try:
        return model.model_validate(doc)
    except ValidationError as e:
        raise RequestValidationError([{**err, "loc": ("body", *err.get("loc", ()))} for err in e.errors(include_url=False)]) from None
