"""Authorisation matrix: every role x every endpoint, over real HTTP (fixture `world`)."""

from __future__ import annotations

import base64
import secrets

import pytest

from .conftest import Producer

ROLES = ["public", "bad_token", "admin", "submitter", "submitter_other_log", "auditor", "auditor_other_run"]
PUBLIC_OK = set(ROLES) - {"bad_token"}


def _fresh_key() -> str:
    return base64.b64encode(Producer().signer.public_key).decode()


# (name, method, path template, body factory, roles allowed (2xx); everyone else: 401 if no valid
# token, else 403). Body factories get (world) and return JSON or None.
ENDPOINTS = [
    ("whoami", "GET", "/v1/whoami", None, PUBLIC_OK),
    ("list_logs", "GET", "/v1/logs", None, PUBLIC_OK),
    ("get_log", "GET", "/v1/logs/{log}", None, PUBLIC_OK),
    ("producers", "GET", "/v1/logs/{log}/producers", None, PUBLIC_OK),
    ("entry", "GET", "/v1/logs/{log}/entries/{entry}", None, PUBLIC_OK),
    ("entry_anchored", "GET", "/v1/logs/{log}/entries/{entry}?anchored=true", None, PUBLIC_OK),
    ("event", "GET", "/v1/logs/{log}/events/{event_id}", None, PUBLIC_OK),
    ("tlog_proof", "GET", "/v1/logs/{log}/entries/{entry}/tlog-proof", None, PUBLIC_OK),
    ("consistency", "GET", "/v1/logs/{log}/consistency?first={cp1}&second={cp2}", None, PUBLIC_OK),
    ("checkpoints", "GET", "/v1/logs/{log}/checkpoints", None, PUBLIC_OK),
    ("checkpoint_latest", "GET", "/v1/logs/{log}/checkpoints/latest", None, PUBLIC_OK),
    ("checkpoint_size", "GET", "/v1/logs/{log}/checkpoints/{cp1}", None, PUBLIC_OK),
    ("checkpoint_note", "GET", "/v1/logs/{log}/checkpoint", None, PUBLIC_OK),
    ("anchors", "GET", "/v1/logs/{log}/anchors", None, PUBLIC_OK),
    ("entry_anchor", "GET", "/v1/logs/{log}/entries/{entry}/anchor", None, PUBLIC_OK),
    ("payload", "GET", "/v1/logs/{log}/entries/{entry}/payload", None, {"auditor"}),
    ("submit", "POST", "/v1/logs/{log}/events", lambda w: {"events": w.producer.events(w.log_id, "authz-" + secrets.token_hex(4), 1)}, {"submitter"}),
    ("init_log", "POST", "/v1/logs", lambda w: {"log_id": "authz-" + secrets.token_hex(4)}, {"admin"}),
    ("register_producer", "POST", "/v1/logs/{log}/producers", lambda w: {"public_key": _fresh_key()}, {"admin"}),
    ("revoke_producer", "POST", "/v1/logs/{log}/producers/{fresh_kid}/revoke", None, {"admin"}),
    ("mint_token", "POST", "/v1/tokens", lambda w: {"role": "auditor", "log_ids": [w.log_id], "run_ids": ["x"]}, {"admin"}),
    ("list_tokens", "GET", "/v1/tokens", None, {"admin"}),
    ("revoke_token", "POST", "/v1/tokens/{fresh_token_id}/revoke", None, {"admin"}),
]


# Authorisation does not depend on the database backend: the matrix runs on SQLite only (the
# PostgreSQL service tests exercise each role there too).
@pytest.mark.parametrize("server", ["sqlite"], indirect=True)
@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=[e[0] for e in ENDPOINTS])
def test_matrix(world, endpoint, role):
    name, method, template, body, allowed = endpoint
    admin = world.server.client(world.tokens["admin"])
    # An entry of the world's run (the producers' key events come first) and its checkpoints.
    fmt = {"log": world.log_id, "entry": world.base + 1, "cp1": world.base + 10, "cp2": world.base + 20}
    if "{event_id}" in template:
        fmt["event_id"] = world.server.client().get(f"/v1/logs/{world.log_id}/entries/{fmt['entry']}").json()["event_id"]
    if "{fresh_kid}" in template:
        fmt["fresh_kid"] = admin.post(f"/v1/logs/{world.log_id}/producers", json={"public_key": _fresh_key()}).json()["key_id"]
    if "{fresh_token_id}" in template:
        fmt["fresh_token_id"] = admin.post("/v1/tokens", json={"role": "admin"}).json()["token_id"]
    path = template.format(**fmt)
    token = {"public": None, "bad_token": "rlt_" + secrets.token_urlsafe(32)}.get(role, world.tokens.get(role))
    client = world.server.client(token)
    r = client.request(method, path, json=body(world) if body else None)
    if role in allowed:
        assert 200 <= r.status_code < 300, f"{role} {method} {path}: {r.status_code} {r.text[:300]}"
    else:
        want = 401 if role in ("public", "bad_token") else 403
        assert r.status_code == want, f"{role} {method} {path}: {r.status_code} {r.text[:300]}"
        assert r.headers["content-type"].startswith("application/problem+json")
        if want == 401:
            assert r.headers["www-authenticate"].startswith("Bearer")


def test_submitter_cannot_submit_for_unbound_producer(world):
    """A submitter may only submit events whose producer is one of its keys."""
    sub = world.server.client(world.tokens["submitter"])
    batch = world.producer.events(world.log_id, "mixed-" + secrets.token_hex(3), 1) + world.other.events(world.log_id, "mixed-x", 1)
    r = sub.post(f"/v1/logs/{world.log_id}/events", json={"events": batch})
    assert r.status_code == 403
    body = r.json()
    assert [(e["index"], e["code"]) for e in body["errors"]] == [(1, "producer_not_bound")]
    # nothing stored: the bound producer's event is still new afterwards
    ok = sub.post(f"/v1/logs/{world.log_id}/events", json={"events": batch[:1]})
    assert ok.status_code == 200 and not ok.json()["results"][0]["duplicate"]
