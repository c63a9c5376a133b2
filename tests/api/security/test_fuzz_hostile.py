"""Item 8: hostile JSON (hypothesis) against the submission and admin routes of a real `serve`:
zero 500s, zero crashes. Bounded to stay well under a minute."""

from __future__ import annotations

import json

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .conftest import alive, setup_log, unique

_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70), st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=40), st.sampled_from(["\x00", "\ud800", "x\n", "\u202e", "1e999", "rlt_", "../../etc/passwd", "%00"]),
)
_json = st.recursive(_scalars, lambda inner: st.one_of(st.lists(inner, max_size=5), st.dictionaries(st.text(max_size=10), inner, max_size=5)),
                     max_leaves=30)

_raw_attacks = st.one_of(
    st.binary(max_size=300),
    st.integers(min_value=60, max_value=5000).map(lambda n: b"[" * n + b"]" * n),
    st.integers(min_value=60, max_value=5000).map(lambda n: b'{"a":' * n + b"0" + b"}" * n),
    st.integers(min_value=4301, max_value=6000).map(lambda n: b'{"events":[' + b"7" * n + b"]}"),
    st.text(max_size=50).map(lambda k: ('{"' + k + '":1,"' + k + '":2}').encode("utf-8", "surrogatepass")),
)


def _envelope_like(event_fields):
    return {"events": [{"event": event_fields, "sig": "A" * 88}]}


_bodies = st.one_of(
    _json.map(lambda v: json.dumps(v).encode()),
    st.dictionaries(st.sampled_from(["v", "log_id", "run_id", "type", "producer", "seq", "prev", "ts", "body", "extra"]), _json, max_size=10)
    .map(lambda d: json.dumps(_envelope_like(d)).encode()),
    _raw_attacks,
)


@pytest.mark.slow
def test_fuzz_submission_and_admin_routes(sec_server):
    log_id = unique("fuzzh")
    _, sub_token = setup_log(sec_server, log_id, ["*"])
    routes = [
        (f"/v1/logs/{log_id}/events", sub_token), ("/v1/logs", sec_server.admin_token), ("/v1/tokens", sec_server.admin_token),
        (f"/v1/logs/{log_id}/producers", sec_server.admin_token), ("/v1/logs", None), (f"/v1/logs/{log_id}/events", None),
    ]
    statuses: list[int] = []
    with httpx.Client(base_url=sec_server.url, timeout=30) as c:

        @given(body=_bodies, route=st.sampled_from(routes), ctype=st.sampled_from(["application/json", "application/json; charset=utf-8", "text/plain"]))
        @settings(max_examples=250, deadline=None, suppress_health_check=list(HealthCheck), database=None, derandomize=True)
        def run(body, route, ctype):
            path, token = route
            headers = {"content-type": ctype}
            if token:
                headers["authorization"] = f"Bearer {token}"
            r = c.post(path, content=body, headers=headers)
            statuses.append(r.status_code)
            assert r.status_code < 500, (path, body[:200], r.status_code, r.text[:300])
            assert r.headers["content-type"].startswith(("application/json", "application/problem+json")), r.headers["content-type"]

        run()
    assert alive(sec_server)
    print(f"{len(statuses)} requests, statuses {sorted(set(statuses))}")
    assert len(statuses) >= 250 and {400, 401, 422} <= set(statuses)
