"""The service's shape (docs/architecture.md, "The API"): one error map keyed by exception class,
one role check (`require`) that every token-only route goes through, and erased data answered
410 because of its class (ErasedError), never because of a message's wording. In-process
(TestClient on SQLite): no server to start."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient

from rlhf_ledger.api import tokens as tok
from rlhf_ledger.api.app import create_app
from rlhf_ledger.api.config import Settings
from rlhf_ledger.api.deps import authenticate
from rlhf_ledger.api.errors import STATUS_BY_TYPE, ledger_status
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
from rlhf_ledger.core.events import commit_fields
from rlhf_ledger.core.roles import Role
from rlhf_ledger.store.fork_guard import SigningRefused
from rlhf_ledger.store.payloads import ErasedError, PayloadError
from tests.api.helpers import PROBLEM
from tests.ledger.helpers import Producer

API = Path(__file__).resolve().parents[2] / "api"


@pytest.mark.parametrize(("exc", "status"), [
    (NotFoundError("x"), 404), (UnknownKeyError("x"), 404), (ConflictError("x"), 409), (RunEndedError("x"), 409),
    (RevokedKeyError("x"), 409), (EventError("x"), 422), (ProofError("x"), 422),
    (ErasedError("the run's data key was erased"), 410), (SigningRefused("x"), 503), (KeyFileError("x"), 503),
    (NoPassphraseError("x"), 503), (NotCoveredYetError("x", code="not_anchored"), 404),
    (NotCoveredYetError("x"), 404),
    # No class says otherwise: refused input. Neither the wording nor a bare code counts.
    (LedgerError("x", code="no_passphrase"), 422), (LedgerError("x", code="not_anchored"), 422),
    (PayloadError("the payload was erased, says the message"), 422), (LedgerError("x", code="not_found"), 422),
    (LedgerError("erased"), 422),
])
def test_status_comes_from_the_class(exc, status):
    assert ledger_status(exc) == status


def test_erased_error_keeps_the_payload_problem_type():
    assert ErasedError.code == PayloadError.code == "payload_error"
    assert issubclass(ErasedError, PayloadError)  # callers catching PayloadError still catch it
    assert all(issubclass(cls, LedgerError) for cls, _ in STATUS_BY_TYPE)


def test_no_module_of_the_api_decides_by_message_text():
    for path in API.rglob("*.py"):
        text = path.read_text()
        assert '"erased" in' not in text and "in exc.message" not in text and "in str(exc)" not in text, path


def _dependency_calls(route: APIRoute) -> list:
    out, todo = [], list(route.dependant.dependencies)
    while todo:
        d = todo.pop()
        out.append(d.call)
        todo.extend(d.dependencies)
    return out


def test_every_route_authenticates_and_token_routes_go_through_require(tmp_path):
    app = create_app(settings=Settings(data_dir=str(tmp_path), checkpoint_interval=0))
    app.openapi()
    routes = [r for r in app.router.routes if isinstance(r, APIRoute)]
    routes += [r for inc in app.router.routes for r in getattr(getattr(inc, "original_router", None), "routes", [])
               if isinstance(r, APIRoute)]
    v1 = {(sorted(r.methods)[0], r.path): r for r in routes if r.path.startswith("/v1/")}
    assert len(v1) == 27
    token_only = {("POST", "/v1/logs"), ("POST", "/v1/logs/{log_id}/producers"), ("POST", "/v1/logs/{log_id}/producers/{key_id}/revoke"),
                  ("POST", "/v1/logs/{log_id}/events"), ("GET", "/v1/logs/{log_id}/entries/{index}/payload"),
                  ("POST", "/v1/tokens"), ("GET", "/v1/tokens"), ("POST", "/v1/tokens/{token_id}/revoke")}
    for key, route in v1.items():
        calls = _dependency_calls(route)
        assert calls.count(authenticate) == 1, key  # one authentication and rate limit per request
        checks = [c for c in calls if getattr(c, "__qualname__", "") == "require.<locals>.check"]
        assert len(checks) == (1 if key in token_only else 0), key


@pytest.fixture
def client(tmp_path, monkeypatch):
    monkeypatch.setenv("RLHF_LEDGER_PASSPHRASE", "test-passphrase-composition")
    app = create_app(settings=Settings(data_dir=str(tmp_path), checkpoint_interval=0, rate_per_second=1000, rate_burst=1000))
    with TestClient(app) as c:
        yield c


def _token(client: TestClient, role: Role, **scope) -> dict[str, str]:
    text, _ = tok.create_token(client.app.state.service.ledger.tokens, role, **scope)
    return {"Authorization": f"Bearer {text}"}


def test_require_refuses_in_the_roles_words_before_parameters_are_checked(client):
    admin = _token(client, Role.ADMIN)
    auditor = _token(client, Role.AUDITOR, log_ids=["other"], run_ids=["r"])
    cases = [
        # (headers, method, path, status, problem type, detail)
        ({}, "POST", "/v1/logs", 401, "token_required", "this administrative operation needs a bearer token"),
        (auditor, "GET", "/v1/tokens", 403, "admin_required", "a auditor token cannot do administrative operations"),
        ({}, "POST", "/v1/logs/bad!id/events", 401, "token_required", "submitting events needs a bearer token"),
        (admin, "POST", "/v1/logs/L/events", 403, "submitter_required", "a admin token cannot submit events"),
        (admin, "GET", "/v1/logs/L/entries/-1/payload", 403, "auditor_required", "a admin token cannot read payloads"),
        (auditor, "GET", "/v1/logs/L/entries/0/payload", 403, "log_not_bound", "this token may not read payloads of log 'L'"),
    ]
    for headers, method, path, status, code, detail in cases:
        r = client.request(method, path, headers=headers, json={})
        assert r.status_code == status and r.headers["content-type"].startswith(PROBLEM), (path, r.text)
        body = r.json()
        assert body["type"].endswith("/" + code) and body["detail"] == detail, body
        assert (r.headers.get("www-authenticate") == 'Bearer realm="rlhf-ledger"') == (status == 401)
    # A public read is not a role check: a malformed parameter is a 422 for everyone.
    assert client.get("/v1/logs/L/entries/-1").status_code == 422


def test_erased_run_is_gone_410_by_class(client):
    ledger = client.app.state.service.ledger
    ledger.init_log("L", checkpoint_every_events=1000)
    p = Producer("L")
    ledger.register_producer("L", p.signer.public_key)
    body, openings = commit_fields({"prompts": ["secret prompt"]}, ["prompts"])
    env = p.event(run_id="r", type="annotation.batch", body=body)
    env["openings"] = openings
    [res] = ledger.append([env])
    auditor = _token(client, Role.AUDITOR, log_ids=["L"], run_ids=["r"])
    path = f"/v1/logs/L/entries/{res.index}/payload"
    assert "secret prompt" in client.get(path, headers=auditor).text
    ledger.erase_run("L", "r")
    with pytest.raises(ErasedError):
        ledger.read_payload("L", res.index)
    late = p.event(run_id="r", type="annotation.batch", body=body)
    late["openings"] = openings
    with pytest.raises(ErasedError):  # an erased run takes no new payloads
        ledger.append([late])
    r = client.get(path, headers=auditor)
    assert r.status_code == 410 and r.headers["content-type"].startswith(PROBLEM)
    assert r.json() == {"type": "https://rlhf-ledger.dev/problems/payload_error", "title": "Error", "status": 410,
                        "detail": f"entry {res.index}: the run's data key was erased: payload unreadable",
                        "instance": path, "errors": [{"index": None, "code": "payload_error", "where": f"entry {res.index}",
                                                      "detail": "the run's data key was erased: payload unreadable"}]}
