"""Rate limits (429 + Retry-After), body size limit (413) and the response timeout (503)."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from rlhf_ledger.api.middleware import GuardMiddleware

from .conftest import start_server
from .helpers import assert_problem


@pytest.fixture(scope="module")
def limited(tmp_path_factory):
    srv = start_server(tmp_path_factory.mktemp("limited"), env={
        "RLHF_API_RATE": "0.5", "RLHF_API_BURST": "3", "RLHF_API_MAX_BODY_BYTES": "65536",
    })
    yield srv
    srv.stop()


@pytest.mark.slow
def test_rate_limit_per_token(limited):
    admin = limited.client(limited.admin_token)
    codes = [admin.get("/v1/whoami").status_code for _ in range(4)]
    assert codes == [200, 200, 200, 429]
    r = admin.get("/v1/whoami")
    body = assert_problem(r, 429)
    assert int(r.headers["retry-after"]) >= 1 and "rate limit" in body["detail"]
    # another caller (the public, keyed by address) has its own bucket
    assert limited.client().get("/v1/logs").status_code == 200
    assert 'ledger_api_rate_limited_total' in limited.client().get("/metrics").text


def test_body_limit(limited):
    url = limited.url + "/v1/logs/x/events"
    big = json.dumps({"events": [{"pad": "x" * 70_000}]}).encode()
    b = assert_problem(httpx.post(url, content=big, headers={"content-type": "application/json"}), 413)
    assert "65536" in b["detail"]

    def chunks():  # no Content-Length: the limit is enforced while reading
        for _ in range(20):
            yield b"x" * 8192

    from rlhf_ledger.api.tokens import create_admin_token

    fresh = create_admin_token(str(limited.data_dir))  # its own rate bucket
    r = httpx.post(limited.url + "/v1/logs", content=chunks(),
                   headers={"content-type": "application/json", "authorization": f"Bearer {fresh}"})
    assert_problem(r, 413)


def test_timeout_answers_503_problem():
    """GuardMiddleware around a deliberately slow ASGI app (a test double for a stuck handler)."""

    async def slow_app(scope, receive, send):
        await asyncio.sleep(5)

    async def run() -> list[dict]:
        sent: list[dict] = []

        async def receive():
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(msg):
            sent.append(msg)

        guard = GuardMiddleware(slow_app, max_body_bytes=1000, timeout=0.2)
        await guard({"type": "http", "path": "/v1/x", "headers": []}, receive, send)
        return sent

    sent = asyncio.run(run())
    assert sent[0]["status"] == 503
    body = json.loads(sent[1]["body"])
    assert body["type"].endswith("/timeout") and body["status"] == 503
