"""From the shell: `rlhf-ledger record` (locally and over HTTP to the real API), `runs` and
`GET /v1/logs/{id}/runs`, `spool status|flush` delivering a crashed run's leftovers, `devchain`
refusing clearly without anvil, and the API's /docs page served with local assets."""

from __future__ import annotations

import base64
import json
import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from rlhf_ledger.cli.main import main
from rlhf_ledger.core.keys import Signer, write_key_file
from rlhf_ledger.sdk import LocalSink, Run
from rlhf_ledger.store.ledger import Ledger

PASS = os.environ.setdefault("RLHF_LEDGER_PASSPHRASE", "test-passphrase-not-a-secret")
ROOT = Path(__file__).resolve().parents[2]


def cli(*args, env=None, input=None):
    r = CliRunner().invoke(main, list(args), env={"RLHF_LEDGER_PASSPHRASE": PASS, **(env or {})}, input=input,
                           catch_exceptions=False)
    return r.exit_code, r.output


@pytest.fixture
def local(tmp_path):
    data = tmp_path / "data"
    assert cli("init", "--data-dir", str(data), "--log", "sh")[0] == 0
    s = Signer.generate()
    key = tmp_path / "k.json"
    write_key_file(key, s, PASS)
    assert cli("register", "--data-dir", str(data), "--log", "sh", base64.b64encode(s.public_key).decode())[0] == 0
    return data, key, s


@pytest.mark.slow
def test_record_and_runs_locally(tmp_path, local):
    data, key, s = local
    base = ["record", "--key", str(key), "--log", "sh", "--run", "review-1", "--data-dir", str(data),
            "--spool", str(tmp_path / "spool")]
    led = Ledger.open(data)
    first = led.size("sh")  # the producer's key event comes first (docs/keys.md)
    led.close()
    code, out = cli(*base, "--type", "human.review", "--body",
                    '{"reviewer": "anp:' + "a" * 64 + '", "decision": "approve", "subject": "model v1", "notes": "ok"}',
                    "--commit", "notes")
    assert code == 0, out
    assert "recorded human.review seq 0 in run review-1" in out and f"at index {first}" in out
    body = tmp_path / "b.json"
    body.write_text('{"name": "ci-eval", "metrics": {"acc": 0.9}}')
    code, out = cli(*base, "--type", "evaluation", "--body-file", str(body))
    assert code == 0 and "seq 1" in out, out
    code, out = cli("runs", "--data-dir", str(data), "--log", "sh", "--json")
    runs = [json.loads(x) for x in out.splitlines()]
    # The log's key-event run is a real run of the log and is listed too (one producer.register).
    assert [(r["run_id"], r["status"], r["events"]) for r in runs] == [("review-1", "open", 2), ("rlhf-ledger:keys", "open", 1)]
    code, out = cli(*base, "--type", "run.end", "--body", '{"status": "completed", "released_weights_digest": null, "steps": 0}')
    assert code == 0, out
    code, out = cli("runs", "--data-dir", str(data), "--log", "sh")
    [line] = [ln for ln in out.splitlines() if ln.startswith("review-1\t")]
    assert line.startswith("review-1\tended (completed)\t3 events, 1 producer(s)") and "no run.start" in line
    # after run.end the run is closed: one clean line naming the run and what to do
    code, out = cli(*base, "--type", "evaluation", "--body", '{"name": "late", "metrics": {}}')
    assert code == 1 and "run review-1" in out and "choose a new run id" in out and "Traceback" not in out
    # bad input: one line, nothing recorded
    for bad, why in ((["--body", "{nope"], "malformed JSON"), (["--body", "[1]"], "must be a JSON object"),
                     (["--body", "{}", "--body-file", str(body)], "exactly one of")):
        code, out = cli(*base, "--type", "evaluation", *bad)
        assert code == 1 and why in out and "Traceback" not in out, out
    code, out = cli("runs", "--data-dir", str(data), "--log", "nope")
    assert code == 1 and "nope" in out


@pytest.mark.slow
def test_spool_status_and_flush_deliver_a_crashed_runs_leftovers(tmp_path, local):
    data, key, s = local

    def down(envs):
        raise ConnectionError("ledger unreachable")

    run = Run(log_id="sh", run_id="crashed", signer=s, sink=LocalSink(down), method="dpo", hyperparameters={"b": 1},
              base_model={"name": "m", "weights_digest": "sha256:" + "0" * 64}, spool_dir=tmp_path / "spool" / "a",
              backoff_base=0.01, backoff_max=0.02).start()
    for i in range(5):
        run.policy_update(i, 0.5, 0.1, 0.1, 0.1, 1.0)
    code, out = cli("spool", "status", str(tmp_path / "spool"))
    assert code == 0 and "open in process" in out and "6 pending" in out, out  # the job still runs
    code, out = cli("spool", "flush", str(tmp_path / "spool"), "--key", str(key), "--data-dir", str(data), "--timeout", "5")
    assert code == 1 and "in use by process" in out  # refused at once while the job holds it
    run.sender.close(timeout=0)  # the job dies: nothing was delivered
    run.journal.close()
    code, out = cli("spool", "status", str(tmp_path / "spool"), "--json")
    st = json.loads(out)
    assert st["pending"] == 6 and st["locked_by"] is None and st["run_id"] == "crashed" and st["started"]
    other = tmp_path / "other.json"
    write_key_file(other, Signer.generate(), PASS)
    code, out = cli("spool", "flush", str(tmp_path / "spool"), "--key", str(other), "--data-dir", str(data))
    assert code == 1 and "no spool of producer" in out
    code, out = cli("spool", "flush", str(tmp_path / "spool"), "--key", str(key), "--data-dir", str(data))
    assert code == 0 and "delivered 6 event(s) of run crashed" in out, out
    code, out = cli("spool", "status", str(tmp_path / "spool"))
    assert "0 pending" in out and "acknowledged up to seq 5" in out
    code, out = cli("spool", "status", str(tmp_path))
    assert code == 0  # a parent directory lists every spool below it
    empty = tmp_path / "empty"
    empty.mkdir()
    code, out = cli("spool", "status", str(empty))
    assert code == 1 and "no spool" in out


def test_devchain_without_anvil_says_how_to_get_it(tmp_path, monkeypatch):
    import rlhf_ledger.cli.record as cr

    monkeypatch.setattr(cr, "_find_anvil", lambda: None)
    code, out = cli("devchain", "--block-time", "1")
    assert code == 1 and "rlhf-ledger devchain --install" in out and "@foundry-rs/anvil-linux-amd64@1.7.1" in out


@pytest.mark.anvil
def test_devchain_runs_the_pinned_anvil_with_a_block_time(tmp_path):
    import socket
    import time

    import httpx

    with socket.socket() as so:
        so.bind(("127.0.0.1", 0))
        port = so.getsockname()[1]
    p = subprocess.Popen([str(Path(sys.executable).parent / "rlhf-ledger"), "devchain", "--block-time", "1", "--port", str(port)],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline, first = time.time() + 30, None
        while time.time() < deadline:
            try:
                n = int(httpx.post(url, json={"jsonrpc": "2.0", "id": 1, "method": "eth_blockNumber", "params": []}).json()["result"], 16)
                if first is None:
                    first = n
                elif n >= first + 2:
                    break  # blocks come without transactions: interval mining
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        else:
            pytest.fail(f"no interval blocks from devchain: {p.stderr.read1(2000) if p.stderr else ''}")
    finally:
        p.terminate()
        p.wait(10)


api_conftest = pytest.importorskip("tests.api.conftest")


@pytest.mark.slow
def test_record_over_http_runs_route_and_offline_docs(tmp_path):
    srv = api_conftest.start_server(tmp_path / "api", None, env={"RLHF_API_RATE": "0"})
    try:
        s = Signer.generate()
        key = tmp_path / "k.json"
        write_key_file(key, s, PASS)
        log_id = "sh-" + secrets.token_hex(3)
        admin = srv.client(srv.admin_token)
        assert admin.post("/v1/logs", json={"log_id": log_id}).status_code == 201
        assert admin.post(f"/v1/logs/{log_id}/producers", json={"public_key": base64.b64encode(s.public_key).decode()}).status_code == 201
        tr = admin.post("/v1/tokens", json={"role": "submitter", "log_ids": [log_id], "producer_key_ids": [s.key_id], "run_ids": ["*"]})
        assert tr.status_code in (200, 201), tr.text
        token = tr.json()["token"]
        base = ["record", "--key", str(key), "--log", log_id, "--url", srv.url, "--spool", str(tmp_path / "spool"),
                "--type", "evaluation", "--body", '{"name": "ci", "metrics": {"acc": 1}}']
        code, out = cli(*base, "--run", "ci-1", env={"RLHF_LEDGER_TOKEN": token})
        assert code == 0 and "seq 0 in run ci-1" in out, out
        code, out = cli(*base, "--run", "ci-2", env={"RLHF_LEDGER_TOKEN": token})
        assert code == 0, out
        code, out = cli(*base, "--run", "ci-3", env={"RLHF_LEDGER_TOKEN": ""})
        assert code == 1 and "holds no token" in out
        code, out = cli(*base, "--run", "ci-3", "--timeout", "5", env={"RLHF_LEDGER_TOKEN": "rlt_wrong"})
        assert code == 1 and "HTTP 401" in out and "Traceback" not in out
        r = admin.get(f"/v1/logs/{log_id}/runs")
        assert r.status_code == 200, r.text
        # The log's key-event run (one producer.register) is a real run of the log and is listed too.
        assert [(x["run_id"], x["status"], x["events"]) for x in r.json()] == [
            ("ci-1", "open", 1), ("ci-2", "open", 1), ("rlhf-ledger:keys", "open", 1)]
        assert [x["run_id"] for x in admin.get(f"/v1/logs/{log_id}/runs", params={"after": "ci-1"}).json()] == [
            "ci-2", "rlhf-ledger:keys"]
        assert admin.get("/v1/logs/no-such-log/runs").status_code == 404
        # /docs references only local assets, and they are served
        page = admin.get("/docs")
        assert page.status_code == 200 and "cdn." not in page.text and "/docs-assets/swagger-ui-bundle.js" in page.text
        js = admin.get("/docs-assets/swagger-ui-bundle.js")
        assert js.status_code == 200 and len(js.content) > 500_000 and b"SwaggerUIBundle" in js.content
        assert admin.get("/docs-assets/swagger-ui.css").status_code == 200
        redoc = admin.get("/redoc")
        assert redoc.status_code == 200 and "cdn." not in redoc.text and "fonts.googleapis" not in redoc.text
        assert "/v1/logs/{log_id}/runs" in admin.get("/openapi.json").json()["paths"]
    finally:
        srv.stop()
