"""Item 1: bounded parsing before any work, and the crash it prevented (real uvicorn)."""

from __future__ import annotations

import subprocess
import sys
import time
import tracemalloc

import httpx
import pytest

from rlhf_ledger.api.bodies import check_shape, nesting_depth_exceeds, parse_json
from rlhf_ledger.api.problems import ApiProblem

from ..conftest import ROOT
from ..helpers import assert_problem
from .conftest import alive, setup_log, unique

DEEP = b"[" * 200_000 + b"]" * 200_000  # the body that crashed the server (SIGSEGV)

HOSTILE = {
    "deep_arrays": DEEP,
    "deep_objects": b'{"a":' * 100_000 + b"1" + b"}" * 100_000,
    "deep_unbalanced": b"[" * 400_000,
    "nesting_1000": b'{"events":' + b"[" * 1000 + b"]" * 1000 + b"}",
    "huge_integer": b'{"events":[' + b"9" * 5000 + b"]}",
    "huge_negative_integer": b'{"events":[{"event":{"seq":-' + b"1" * 4301 + b"}}]}",
    "huge_exponent": b'{"events":[1e999999999]}',
    "not_utf8": b'{"events":["\xff\xfe"]}',
    "lone_surrogate_escape": b'{"events":[{"event":"\\ud800"}]}',
    "nul_escape": b'{"events":[{"event":{"run_id":"a\\u0000b"}}]}',
    "truncated": b'{"events": [',
    "duplicate_top_key": b'{"events":[],"events":[1]}',
    "bare_string": b'"events"',
    "empty": b"",
    "nan_literal": b'{"events":[NaN]}',
    "many_values": b'{"events":[' + b"0," * 600_000 + b"0]}",
}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_submission_bodies_get_4xx_never_500(sec_server, name):
    p, token = _submitter(sec_server)
    r = sec_server.client(token).post(f"/v1/logs/{_LOG[0]}/events", content=HOSTILE[name], headers={"content-type": "application/json"})
    assert r.status_code in (400, 422), (name, r.status_code, r.text[:300])
    if name not in ("lone_surrogate_escape", "nul_escape", "bare_string"):  # well-formed JSON, refused by shape
        assert r.json()["type"].endswith("/malformed_json"), (name, r.text[:300])
    assert alive(sec_server)


_LOG: list[str] = []


def _submitter(srv):
    if not _LOG:
        log_id = unique("bodies")
        p, tok = setup_log(srv, log_id, ["*"])
        _LOG.extend([log_id, tok])
        _LOG.append(p)
    return _LOG[2], _LOG[1]


@pytest.mark.slow
def test_crash_sequence_401_bundle_then_deep_nesting_server_keeps_serving(sec_server):
    """The three-request SIGSEGV: a 401, any public bundle request (imports web3 and py_ecc,
    which raises the recursion limit to 100,000), then 200,000 nested brackets to an admin
    route without a token. Now: 401 (the body is never parsed), and still serving."""
    p, token = _submitter(sec_server)
    log_id = _LOG[0]
    c = sec_server.client(token)
    assert c.post(f"/v1/logs/{log_id}/events", json={"events": p.events(log_id, "crash-run", 3)}).status_code == 200
    assert_problem(httpx.get(sec_server.url + "/v1/whoami", headers={"authorization": "Bearer rlt_nope"}), 401)
    r = httpx.get(f"{sec_server.url}/v1/logs/{log_id}/entries/0/bundle", timeout=30)
    assert r.status_code in (200, 404), r.text[:300]
    for _ in range(3):
        r = httpx.post(sec_server.url + "/v1/logs", content=DEEP, headers={"content-type": "application/json"}, timeout=30)
        assert_problem(r, 401)
        admin = sec_server.client(sec_server.admin_token)
        b = assert_problem(admin.post("/v1/logs", content=DEEP[:60_000], headers={"content-type": "application/json"}), 400)
        assert b["type"].endswith("/malformed_json")
        r = c.post(f"/v1/logs/{log_id}/events", content=DEEP, headers={"content-type": "application/json"})
        assert_problem(r, 400)
    assert alive(sec_server)
    assert c.post(f"/v1/logs/{log_id}/events", json={"events": p.events(log_id, "crash-run", 1)}).status_code == 200


def test_admin_body_not_read_before_authorisation(sec_server):
    """16 MiB to an admin route without a token: refused by the token check, body unread."""
    t0 = time.perf_counter()
    r = httpx.post(sec_server.url + "/v1/tokens", content=b"[" * (16 * 1024 * 1024 - 1), headers={"content-type": "application/json"}, timeout=60)
    assert_problem(r, 401)
    # with a token, admin bodies are limited to 64 KiB
    admin = sec_server.client(sec_server.admin_token)
    r = admin.post("/v1/tokens", content=b" " * 70_000 + b"{}", headers={"content-type": "application/json"})
    assert_problem(r, 413)
    assert time.perf_counter() - t0 < 30
    assert alive(sec_server)


@pytest.mark.slow
def test_recursion_limit_guarded_after_every_import_path():
    """Import every module of the product (what any route can load), then start the app:
    the service's limits are back, whatever the imports did."""
    code = r"""
import importlib, pkgutil, sys
sys.setrecursionlimit(100_000)  # what py_ecc does on import
import rlhf_ledger.api.app, rlhf_ledger.api.limits as limits
for pkg in ("rlhf_ledger",):
    mod = importlib.import_module(pkg)
    for info in pkgutil.walk_packages(mod.__path__, pkg + "."):
        if ".sdk" in info.name or ".demo" in info.name or info.name.endswith("__main__"):
            continue
        try:
            importlib.import_module(info.name)
        except Exception as e:
            print("skip", info.name, type(e).__name__, file=sys.stderr)
import py_ecc  # noqa: F401  the module that raises the limit
limits.preload()
assert sys.getrecursionlimit() == limits.RECURSION_LIMIT, sys.getrecursionlimit()
sys.setrecursionlimit(100_000)
from fastapi.testclient import TestClient
import os, tempfile
os.environ["RLHF_LEDGER_PASSPHRASE"] = "x"
d = tempfile.mkdtemp()
from rlhf_ledger.api.config import Settings
app = rlhf_ledger.api.app.create_app(settings=Settings(data_dir=d, checkpoint_interval=0))
with TestClient(app) as c:
    sys.setrecursionlimit(100_000)  # a module imported while serving
    r = c.post("/v1/logs", content=b"[" * 100_000, headers={"content-type": "application/json"})
    assert r.status_code == 401, r.status_code
    assert sys.getrecursionlimit() == limits.RECURSION_LIMIT
print("ok")
"""
    out = subprocess.run([sys.executable, "-c", code], cwd=str(ROOT), capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stderr[-3000:]


def test_depth_check_is_exact_and_ignores_brackets_in_strings():
    ok = b"[" * 64 + b"]" * 64
    assert not nesting_depth_exceeds(ok, 64)
    assert nesting_depth_exceeds(b"[" + ok + b"]", 64)
    mixed = b'{"a":[' * 32 + b"1" + b"]}" * 32
    check_shape(mixed, max_values=10_000)
    with pytest.raises(ApiProblem):
        check_shape(b'{"a":[' * 33 + b"1" + b"]}" * 33, max_values=10_000)
    # brackets inside strings (with escaped quotes) do not count
    assert parse_json(b'{"x":"' + b"[[[[\\\"{{{{" * 1000 + b'"}', max_values=10) == {"x": "[[[[\"{{{{" * 1000}


def test_memory_per_request_is_bounded():
    """The worst body the submission route accepts for parsing: 16 MiB at the value cap.
    Peak Python allocations of the parse stay below a documented bound (docs/security.md)."""
    n = 500_000 - 2
    body = b'{"events":[' + b",".join([b'"aaaaaaaaaaaaaaaaaaaaaaaaa"'] * n) + b"]}"
    body = body[: 16 * 1024 * 1024]
    tracemalloc.start()
    try:
        parse_json(body, max_values=500_000)
    except ApiProblem:
        pass
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    print(f"body {len(body)} bytes, peak parse allocations {peak / 2**20:.1f} MiB")
    assert peak < 128 * 2**20
    with pytest.raises(ApiProblem):  # one value more than the cap
        parse_json(b"[" + b"0," * 500_000 + b"0]", max_values=500_000)
