"""Shared helpers for the API tests."""

from __future__ import annotations

import base64
import time

import httpx

PROBLEM = "application/problem+json"


def assert_problem(r: httpx.Response, status: int) -> dict:
    assert r.status_code == status, f"{r.status_code} != {status}: {r.text[:500]}"
    assert r.headers["content-type"].startswith(PROBLEM), r.headers["content-type"]
    body = r.json()
    assert body["status"] == status
    assert body["type"].startswith("https://") and body["title"] and body["detail"] and body["instance"]
    return body


def b64d(s: str) -> bytes:
    return base64.b64decode(s, validate=True)


def wait_for(pred, timeout: float = 15.0, what: str = "condition"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def wait_ready(proc, url: str, log_path, what: str, probe: str = "/readyz", timeout: float = 60.0) -> None:  # noqa: ANN001
    """Wait until a started server answers 200 on `probe`; on exit or time-out, kill it and
    raise with the tail of its log."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}: {log_path.read_text(errors='replace')[-3000:]}")
        try:
            if httpx.get(url + probe, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise RuntimeError(f"{what} did not become ready: {log_path.read_text(errors='replace')[-3000:]}")
