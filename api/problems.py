"""RFC 9457 problem details (application/problem+json) for every error the service returns."""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

PROBLEM_MEDIA_TYPE = "application/problem+json"
TYPE_BASE = "https://rlhf-ledger.dev/problems/"

TITLES = {
    400: "Bad request",
    401: "Authentication required",
    403: "Forbidden",
    404: "Not found",
    405: "Method not allowed",
    406: "Not acceptable",
    409: "Conflict",
    413: "Request body too large",
    415: "Unsupported media type",
    422: "Unprocessable content",
    429: "Too many requests",
    500: "Internal server error",
    503: "Service unavailable",
}


class ProblemItem(BaseModel):
    index: int | None = Field(None, description="position of the refused event in the batch")
    code: str = Field(description="stable machine-readable reason, e.g. bad_signature")
    where: str | None = Field(None, description="JSON path of the offending value")
    detail: str


class Problem(BaseModel):
    """RFC 9457 problem details."""

    type: str
    title: str
    status: int
    detail: str
    instance: str
    errors: list[ProblemItem] | None = None


class ApiProblem(Exception):
    """Raise to answer with a problem; `code` names the type URI (TYPE_BASE + code)."""

    def __init__(
        self,
        status: int,
        code: str,
        detail: str,
        *,
        errors: list[dict] | None = None,
        headers: dict[str, str] | None = None,
        title: str | None = None,
    ):
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail
        self.errors = errors
        self.headers = headers or {}
        self.title = title


def problem_body(status: int, code: str, detail: str, instance: str, errors: list[dict] | None = None, title: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "type": TYPE_BASE + code,
        "title": title or TITLES.get(status, "Error"),
        "status": status,
        "detail": detail,
        "instance": instance,
    }
    if errors is not None:
        body["errors"] = errors
    return body


def problem_response(
    request: Request | None,
    status: int,
    code: str,
    detail: str,
    *,
    errors: list[dict] | None = None,
    headers: dict[str, str] | None = None,
    instance: str | None = None,
    title: str | None = None,
) -> JSONResponse:
    inst = instance if instance is not None else (request.url.path if request is not None else "")
    return JSONResponse(
        problem_body(status, code, detail, inst, errors, title),
        status_code=status,
        media_type=PROBLEM_MEDIA_TYPE,
        headers=headers,
    )


def _content(desc: str) -> dict:
    return {"description": desc, "content": {PROBLEM_MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}}}


# Documented on every operation so clients (and schemathesis) know every error is a Problem.
COMMON_RESPONSES: dict[int | str, dict] = {
    400: _content("Malformed request (bad JSON, bad parameter)"),
    401: _content("Missing or unknown bearer token"),
    403: _content("The token's role or scope does not allow this"),
    404: _content("No such log, entry, checkpoint or anchor"),
    413: _content("Request body larger than the limit"),
    422: _content("Well-formed but refused (validation, batch refusal)"),
    429: _content("Rate limit exceeded; see Retry-After"),
    503: _content("Timed out or not ready"),
    "default": _content("Any other error, as a problem"),
}
