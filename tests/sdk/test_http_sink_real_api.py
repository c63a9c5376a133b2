"""HttpSink against the real FastAPI service (api/), run by uvicorn in a subprocess: delivery with
openings, an outage (server stopped) with retries, and delivery after the server is back."""

from __future__ import annotations

import base64
import secrets

import pytest

from rlhf_ledger.core.keys import Signer
from rlhf_ledger.sdk import HttpSink, PermanentDeliveryError, Run

api_conftest = pytest.importorskip("tests.api.conftest")


@pytest.fixture
def api_server(tmp_path):
    srv = api_conftest.start_server(tmp_path / "api", None, env={"RLHF_API_RATE": "0"})
    yield srv
    srv.stop()


def test_run_delivers_to_real_api_through_an_outage(tmp_path, api_server):
    srv = api_server
    s = Signer.generate()
    log_id = "sdk-" + secrets.token_hex(3)
    admin = srv.client(srv.admin_token)
    assert admin.post("/v1/logs", json={"log_id": log_id}).status_code == 201
    r = admin.post(f"/v1/logs/{log_id}/producers", json={"public_key": base64.b64encode(s.public_key).decode()})
    assert r.status_code == 201, r.text
    r = admin.post("/v1/tokens", json={"role": "submitter", "log_ids": [log_id], "producer_key_ids": [s.key_id], "run_ids": ["*"]})
    token = r.json()["token"]
    base = srv.client().get(f"/v1/logs/{log_id}").json()["size"]  # the producer's key event comes first

    def make(url, **kw):
        return Run(log_id=log_id, run_id="run-http", signer=s, sink=HttpSink(url, token, log_id), method="dpo",
                   hyperparameters={"beta": 0.1}, base_model={"name": "m", "weights_digest": "sha256:" + "0" * 64},
                   spool_dir=tmp_path / "spool", pseudonym_key=b"k" * 32, backoff_base=0.05, backoff_max=0.5, **kw)

    run = make(srv.url, exit_timeout=1.0).start()
    run.annotation_batch(batch_id="b", dataset_id="d", guideline_version="g", annotators=["x"], prompts=["p"],
                         responses=["r"], labels={"a": 1})
    run.flush(30)
    assert [a.index for a in run.sender.acks] == [base, base + 1]
    srv.stop()  # outage: the ledger is down
    for i in range(5):
        run.policy_update(i, 0.5, 0.1, 0.2, 0.05, 1.0, param_delta_norm=0.0)
    with pytest.raises(TimeoutError, match="not yet acknowledged"):
        run.end("completed")  # run.end is in the spool, not delivered
    assert run.sender.retries >= 1
    srv2 = api_conftest.start_server(srv.data_dir, None, env={"RLHF_API_RATE": "0"})  # same data, new port
    try:
        again = make(srv2.url).open()
        again.flush(60)
        again.sender.close()
        assert [a.index for a in again.sender.acks] == list(range(base + 2, base + 8))
        got = srv2.client(srv2.admin_token).get(f"/v1/logs/{log_id}/entries/{base + 7}")
        assert got.status_code == 200, got.text
        # a wrong token is a permanent refusal, surfaced, not retried forever
        bad = Run(log_id=log_id, run_id="run-bad", signer=s, sink=HttpSink(srv2.url, "rlt_wrong", log_id), method="sft",
                  hyperparameters={"lr": 1}, base_model={"name": "m", "weights_digest": "sha256:" + "0" * 64},
                  spool_dir=tmp_path / "spool-bad")
        with pytest.raises(PermanentDeliveryError, match="HTTP 401"):
            with bad:
                pass
    finally:
        srv2.stop()


def test_batches_the_service_finds_too_costly_are_halved(tmp_path, api_server):
    """The real API caps a request's CPU cost (slow-path events, e.g. with floats, weigh more):
    a backlog of 600 events goes through in smaller requests instead of failing for good."""
    srv = api_server
    s = Signer.generate()
    log_id = "cost-" + secrets.token_hex(3)
    admin = srv.client(srv.admin_token)
    assert admin.post("/v1/logs", json={"log_id": log_id}).status_code == 201
    assert admin.post(f"/v1/logs/{log_id}/producers", json={"public_key": base64.b64encode(s.public_key).decode()}).status_code == 201
    token = admin.post("/v1/tokens", json={"role": "submitter", "log_ids": [log_id], "producer_key_ids": [s.key_id],
                                           "run_ids": ["*"]}).json()["token"]
    sink = HttpSink(srv.url, token, log_id)
    run = Run(log_id=log_id, run_id="costly", signer=s, sink=sink, method="dpo", hyperparameters={"beta": 0.1},
              base_model={"name": "m", "weights_digest": "sha256:" + "0" * 64}, spool_dir=tmp_path / "spool")
    run.open()
    with run.sender._cond:  # the sender cannot record an acknowledgement meanwhile: a backlog builds up
        run.start()
        for i in range(600):
            run.policy_update(i, 0.5 + i / 7, 0.1, 0.2, 0.05, 1.0, param_delta_norm=0.0)
    run.end()
    assert run.sender.acked_seq == 601 and sink.max_batch < 600
    assert admin.get(f"/v1/logs/{log_id}/entries/601").status_code == 200
