"""Spool durability across SIGKILL, HttpSink retries/backoff/dead letters, batching, trimming."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from rlhf_ledger.core.keys import Signer
from rlhf_ledger.sdk import HttpSink, LocalSink, PermanentDeliveryError, Run
from rlhf_ledger.sdk.spool import Journal

from .helpers import EmulatedLedgerApiForTests, RecordingAppendForTests, check_chains

ROOT = Path(__file__).resolve().parents[2]


def http_run(url, signer, spool, token="tok", **kw):
    return Run(log_id="log-c", run_id="run-crash", signer=signer, sink=HttpSink(url, token, "log-c"), method="ppo",
               hyperparameters={"lr": 1e-6}, base_model={"name": "m", "weights_digest": "sha256:" + "0" * 64},
               spool_dir=spool, backoff_base=0.01, backoff_max=0.05, **kw)


def kill_child_after_calls(seed: bytes, url: str, spool: Path, n: int) -> None:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    child = subprocess.Popen([sys.executable, str(Path(__file__).with_name("crash_child.py")), seed.hex(), url, str(spool), str(n)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=ROOT)
    try:
        line = child.stdout.readline().decode()
        assert line.startswith("RETURNED"), (line, child.stderr.read().decode()[-2000:])
        child.send_signal(signal.SIGKILL)  # right after every call returned: no chance to flush or trim
        child.wait(10)
    finally:
        if child.poll() is None:
            child.kill()
    assert child.returncode == -signal.SIGKILL


@pytest.mark.slow
@pytest.mark.parametrize("ledger_state", ["slow", "down"])
def test_sigkill_after_calls_return_loses_nothing_and_duplicates_nothing(tmp_path, ledger_state):
    seed = os.urandom(32)
    signer = Signer.from_seed(seed)
    app = RecordingAppendForTests(signer)
    api = EmulatedLedgerApiForTests(app, token="tok", log_id="log-c")
    try:
        if ledger_state == "slow":
            api.delay = 0.05  # some batches are delivered before the kill, some in flight, some not sent
        else:
            api.script = [503] * 10_000  # nothing is delivered before the kill
        n = 400
        kill_child_after_calls(seed, api.url, tmp_path / "spool", n)
        delivered_before = len(app.entries)
        assert delivered_before < n + 1  # the kill really interrupted delivery
        if ledger_state == "slow":
            assert delivered_before > 0  # ... after part of the run was acknowledged
        print(f"delivered before the kill: {delivered_before} of {n + 1}")
        api.script, api.delay = [], 0.0
        with http_run(api.url, signer, tmp_path / "spool") as run:  # restart: replays the spool first
            assert run.resumed
        events = app.events()
        check_chains(events)
        ids = [e["seq"] for e in events]
        assert ids == list(range(len(events)))  # exactly once, in order, no gaps
        assert [e["type"] for e in events] == ["run.start"] + ["policy.update"] * n + ["run.end"]
        assert [e["body"]["step"] for e in events if e["type"] == "policy.update"] == list(range(n))
        assert len(set(app.index_of)) == len(events)
        assert not any((tmp_path / "spool").glob("journal-*.jsonl"))  # fully acknowledged spool is trimmed
    finally:
        api.close()


@pytest.mark.slow
def test_http_retries_with_backoff_then_succeeds(tmp_path):
    s = Signer.generate()
    app = RecordingAppendForTests(s)
    api = EmulatedLedgerApiForTests(app, token="tok", log_id="log-c")
    api.script = [503, 500, 502]
    try:
        with http_run(api.url, s, tmp_path / "spool") as run:
            run.evaluation("e", {"x": 1})
            run.flush(30)
            assert run.sender.retries >= 3
        assert [r["auth"] for r in api.requests] == ["Bearer tok"] * len(api.requests)
        assert [e["type"] for e in app.events()] == ["run.start", "evaluation", "run.end"]
    finally:
        api.close()


@pytest.mark.slow
def test_connection_refused_is_retried_and_kept_in_the_spool(tmp_path):
    s = Signer.generate()
    app = RecordingAppendForTests(s)
    import socket

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    dead_url = f"http://127.0.0.1:{sock.getsockname()[1]}"  # bound, not listening: connection refused
    run = http_run(dead_url, s, tmp_path / "spool", exit_timeout=0.3)
    run.start()
    run.evaluation("e", {"x": 1})
    with pytest.raises(TimeoutError, match="not yet acknowledged.*ConnectError"):
        run.flush(0.5)
    with pytest.raises(TimeoutError):
        run.end("completed")
    sock.close()
    assert run.sender.retries >= 2
    api = EmulatedLedgerApiForTests(app, token="tok", log_id="log-c")
    try:
        run2 = http_run(api.url, s, tmp_path / "spool").open()
        run2.flush(30)  # the replayed spool includes run.end
        run2.sender.close()
        assert [e["type"] for e in app.events()] == ["run.start", "evaluation", "run.end"]
    finally:
        api.close()


@pytest.mark.slow
def test_permanent_refusal_goes_to_dead_letter_and_is_surfaced(tmp_path):
    s = Signer.generate()
    app = RecordingAppendForTests()  # producer key not registered: the ledger refuses (422)
    api = EmulatedLedgerApiForTests(app, token="tok", log_id="log-c")
    try:
        run = http_run(api.url, s, tmp_path / "spool")
        run.start()
        run.evaluation("e", {"x": 1})
        with pytest.raises(PermanentDeliveryError, match="unknown_key|not registered") as ei:
            run.flush(30)
        assert "deadletter.jsonl" in str(ei.value)
        n_requests = len(api.requests)
        with pytest.raises(PermanentDeliveryError):
            run.end("completed")
        assert len(api.requests) == n_requests  # no retry loop on a 4xx
        dead = [json.loads(line) for line in (tmp_path / "spool" / "deadletter.jsonl").read_text().splitlines()]
        assert dead[0]["error"]["code"] == "unknown_key" and dead[0]["envelopes"][0]["event"]["type"] == "run.start"
        # the operator registers the key; a restart delivers everything that was kept
        app.keys[s.key_id] = s.public_key
        run2 = http_run(api.url, s, tmp_path / "spool").open()
        run2.flush(30)
        run2.sender.close()
        assert [e["type"] for e in app.events()] == ["run.start", "evaluation", "run.end"]
    finally:
        api.close()


@pytest.mark.slow
def test_wrong_token_is_permanent(tmp_path):
    s = Signer.generate()
    api = EmulatedLedgerApiForTests(RecordingAppendForTests(s), token="tok", log_id="log-c")
    try:
        run = http_run(api.url, s, tmp_path / "spool", token="wrong")
        with pytest.raises(PermanentDeliveryError, match="HTTP 401"):
            with run:
                pass
    finally:
        api.close()


def test_batches_are_at_most_1000_and_outage_of_local_sink_is_retried(tmp_path):
    s = Signer.generate()
    app = RecordingAppendForTests(s)
    app.fail_transient = 3
    run = Run(log_id="log-b", run_id="r", signer=s, sink=LocalSink(app), method="sft", hyperparameters={"lr": 1},
              base_model={"name": "m", "weights_digest": "sha256:" + "0" * 64}, spool_dir=tmp_path / "sp",
              backoff_base=0.001, backoff_max=0.01)
    with run:
        for i in range(2500):
            run.reward_model_update(i, 0.5)
    assert max(app.calls) <= 1000
    assert run.sender.retries >= 3
    events = app.events()
    check_chains(events)
    assert len(events) == 2502


def test_torn_final_line_is_dropped_and_order_checked(tmp_path):
    s = Signer.generate()
    d = tmp_path / "sp"
    j = Journal(d, log_id="l", run_id="r", producer=s.key_id)
    for _ in range(3):
        j.append(lambda seq: b'{"seq":%d,"type":"x.y","ts":"2026-01-01T00:00:00.000000Z","body":{}}\n' % seq)
    j.close()
    seg = next(d.glob("journal-*.jsonl"))
    with open(seg, "ab") as f:
        f.write(b'{"seq":3,"type":"x.y","ts":"2026-01-0')  # a write torn by power loss
    j2 = Journal(d, log_id="l", run_id="r", producer=s.key_id)
    assert len(j2.recovered.pending) == 3 and j2.next_seq == 3
    j2.close()
    seg.write_bytes(seg.read_bytes().replace(b'"seq":1', b'"seq":7'))
    with pytest.raises(Exception, match="does not follow"):
        Journal(d, log_id="l", run_id="r", producer=s.key_id)


def test_segments_rotate_and_acknowledged_ones_are_deleted(tmp_path):
    s = Signer.generate()
    app = RecordingAppendForTests(s)
    run = Run(log_id="log-b", run_id="r", signer=s, sink=LocalSink(app), method="sft", hyperparameters={"lr": 1},
              base_model={"name": "m", "weights_digest": "sha256:" + "0" * 64}, spool_dir=tmp_path / "sp")
    run.start()
    run.journal.segment_bytes = 4096
    for i in range(200):
        run.reward_model_update(i, 0.5)
    run.flush(30)
    assert len(list((tmp_path / "sp").glob("journal-*.jsonl"))) <= 2
    run.end()
    check_chains(app.events())
    assert len(app.events()) == 202
