"""Run lifecycle and failing early: ended runs are not resumed, the spool has one writer, delivery
failures are said when they happen and raised at the next call, one sink serves several runs,
and ranks other than 0 record nothing unless they use their own key (RankRecorder)."""

from __future__ import annotations

import pytest

from rlhf_ledger.core.errors import EventError
from rlhf_ledger.core.keys import Signer
from rlhf_ledger.sdk import (
    ChainConflictError,
    DeliveryAuthError,
    HttpSink,
    LocalSink,
    RankRecorder,
    Run,
    RunEndedDeliveryError,
    RunEndedError,
    SpoolLockedError,
)

from .helpers import EmulatedLedgerApiForTests, RecordingAppendForTests, check_chains

BASE = {"name": "m", "weights_digest": "sha256:" + "0" * 64}


def make_run(spool, signer, sink, run_id="r1", **kw):
    return Run(log_id="lc-log", run_id=run_id, signer=signer, sink=sink, method="dpo", hyperparameters={"beta": 0.1},
               base_model=BASE, spool_dir=spool, pseudonym_key=b"k" * 32, backoff_base=0.01, backoff_max=0.05,
               exit_timeout=10, **kw)


def test_an_ended_run_is_not_resumed(tmp_path):
    s = Signer.generate()
    app = RecordingAppendForTests(s)
    with make_run(tmp_path / "sp", s, LocalSink(app)) as run:
        run.evaluation("e", {"x": 1})
    with pytest.raises(RunEndedError, match="run 'r1' in log 'lc-log' has already ended.*choose a new run id"):
        make_run(tmp_path / "sp", s, LocalSink(app)).start()
    # the refusal released the spool: a new Run with a new id works, and the ended run got nothing more
    with make_run(tmp_path / "sp2", s, LocalSink(app), run_id="r2"):
        pass
    types = [(e["run_id"], e["type"]) for e in app.events()]
    assert types.count(("r1", "run.end")) == 1 and ("r2", "run.start") in types


def test_same_run_id_from_a_fresh_spool_names_the_ledgers_refusal(tmp_path, capfd):
    s = Signer.generate()
    app = RecordingAppendForTests(s)
    with make_run(tmp_path / "sp", s, LocalSink(app)):
        pass
    again = make_run(tmp_path / "other-machine", s, LocalSink(app))  # the spool is gone: the ledger refuses
    with pytest.raises(RunEndedDeliveryError, match="run r1: .*run_ended.*choose a new run id"):
        with again:
            again.flush(10)
    assert "delivery of run r1 (log lc-log) stopped: RunEndedDeliveryError" in capfd.readouterr().err


def test_a_second_opener_of_a_spool_is_refused_at_once(tmp_path):
    s = Signer.generate()
    app = RecordingAppendForTests(s)
    first = make_run(tmp_path / "sp", s, LocalSink(app)).start()
    with pytest.raises(SpoolLockedError, match="in use by process .*this process"):
        make_run(tmp_path / "sp", s, LocalSink(app)).start()
    first.end()
    second = make_run(tmp_path / "sp", s, LocalSink(app))
    with pytest.raises(RunEndedError):  # the lock is free again; the run itself has ended
        second.start()


@pytest.mark.slow
def test_permanent_failure_is_printed_when_it_happens_and_raised_at_the_next_call(tmp_path, capfd):
    s = Signer.generate()
    api = EmulatedLedgerApiForTests(RecordingAppendForTests(s), token="right", log_id="lc-log")
    try:
        run = make_run(tmp_path / "sp", s, HttpSink(api.url, "wrong", "lc-log")).start()
        import time

        deadline = time.monotonic() + 10
        while run.delivery_error is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert isinstance(run.delivery_error, DeliveryAuthError)
        err = capfd.readouterr().err  # said on stderr before the training thread calls anything
        assert "delivery of run r1 (log lc-log) stopped: DeliveryAuthError" in err and "HTTP 401" in err
        assert "rlhf-ledger spool flush" in err
        with pytest.raises(DeliveryAuthError, match="HTTP 401"):
            run.evaluation("e", {"x": 1})  # the next SDK call raises it (and records nothing)
        seq = run.evaluation("e", {"x": 2})  # raised once; recording to the spool goes on
        assert seq == 1  # run.start was 0; the call that raised recorded nothing
        with pytest.raises(DeliveryAuthError):
            run.end()
        # warn mode: printed, not raised at the next call; still raised when the run ends
        warn = make_run(tmp_path / "sp-w", s, HttpSink(api.url, "wrong", "lc-log"), run_id="w", on_delivery_error="warn").start()
        deadline = time.monotonic() + 10
        while warn.delivery_error is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert warn.evaluation("e", {"x": 1}) is not None
        with pytest.raises(DeliveryAuthError):
            warn.end()
        assert "delivery of run w" in capfd.readouterr().err
    finally:
        api.close()
    with pytest.raises(ValueError, match="on_delivery_error"):
        make_run(tmp_path / "x", s, LocalSink(RecordingAppendForTests(s)), on_delivery_error="ignore")


@pytest.mark.slow
def test_one_sink_serves_several_runs_and_refuses_another_log(tmp_path):
    s = Signer.generate()
    app = RecordingAppendForTests(s)
    api = EmulatedLedgerApiForTests(app, token="t", log_id="lc-log")
    try:
        with HttpSink(api.url, "t", "lc-log") as sink:
            a = make_run(tmp_path / "a", s, sink, run_id="a").start()
            b = make_run(tmp_path / "b", s, sink, run_id="b").start()
            a.end()  # ending one run leaves the shared sink working for the other
            b.evaluation("after a ended", {"x": 1})
            b.end()
            with pytest.raises(ValueError, match="delivers to log 'lc-log', but run 'c' is in log 'other'"):
                Run(log_id="other", run_id="c", signer=s, sink=sink, method="dpo", hyperparameters={"x": 1},
                    base_model=BASE, spool_dir=tmp_path / "c")
    finally:
        api.close()
    events = app.events()
    check_chains(events)
    assert [e["type"] for e in events if e["run_id"] == "b"] == ["run.start", "evaluation", "run.end"]


def test_other_ranks_record_nothing_by_default(tmp_path, monkeypatch):
    s = Signer.generate()
    app = RecordingAppendForTests(s)
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    run = make_run(tmp_path / "sp", s, LocalSink(app))
    assert not run.active and run.rank_info.rank == 1 and run.rank_info.source == "torchrun"
    with run:
        assert run.policy_update(1, 0.1, 0.0, 0.0, 0.0, 1.0) is None
        assert run.annotation_batch(batch_id="b", dataset_id="d", guideline_version="g", annotators=["x"],
                                    prompts=["p"], responses=["r"], labels=["a"]) is None
        assert run.event("custom.thing", {"a": 1}) is None
    assert not (tmp_path / "sp").exists() and app.events() == []
    monkeypatch.setenv("RANK", "0")
    with make_run(tmp_path / "sp0", s, LocalSink(app)) as run0:
        assert run0.active
    start = app.events()[0]
    assert start["type"] == "run.start" and start["body"]["world_size"] == 2


def test_rank_recorder_chains_under_its_own_key_with_the_rank(tmp_path, monkeypatch):
    s, k1 = Signer.generate(), Signer.generate()
    app = RecordingAppendForTests(s, k1)
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "0")
    run = make_run(tmp_path / "sp", s, LocalSink(app)).start()
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("LOCAL_RANK", "1")
    with RankRecorder(log_id="lc-log", run_id="r1", signer=k1, sink=LocalSink(app), spool_dir=tmp_path / "rk") as rec:
        rec.compute_usage("cpu", 1.5)
        rec.evaluation("shard-eval", {"acc": 0.5})
        for t in ("run.start", "run.end", "dataset.register", "privacy.spend"):
            with pytest.raises(EventError, match="run-level event"):
                rec.event(t, {})
        with pytest.raises(EventError, match="rank=3 but this recorder is rank 1"):
            rec.event("custom.x", {"rank": 3})
    run.end()
    events = app.events()
    check_chains(events)
    mine = [e for e in events if e["producer"] == k1.key_id]
    assert [e["type"] for e in mine] == ["compute.usage", "evaluation"]
    assert all(e["body"]["rank"] == 1 and e["body"]["world_size"] == 2 and e["body"]["local_rank"] == 1 for e in mine)
    assert {e["producer"] for e in events if e["type"].startswith("run.")} == {s.key_id}


def test_second_writer_on_one_chain_is_a_named_error(tmp_path):
    s = Signer.generate()
    app = RecordingAppendForTests(s)
    a = make_run(tmp_path / "a", s, LocalSink(app)).start()
    a.flush(10)
    b = make_run(tmp_path / "b", s, LocalSink(app))  # the same key and run, another spool
    with pytest.raises(ChainConflictError, match="Another process is writing this producer's chain"):
        with b:
            b.flush(10)
    a.end()


def test_real_ledger_refusals_reach_the_run_by_name(tmp_path, ledger):
    """The embedded ledger (SQLite and PostgreSQL): a run id reused after run.end, and a second writer."""
    ledger.init_log("lc-log")
    s = Signer.generate()
    ledger.register_producer("lc-log", s.public_key, "t")
    with make_run(tmp_path / "a", s, LocalSink(ledger.append)):
        pass
    with pytest.raises(RunEndedDeliveryError, match="run r1: .*closed by its run.end.*choose a new run id"):
        with make_run(tmp_path / "b", s, LocalSink(ledger.append)) as again:
            again.flush(10)
    one = make_run(tmp_path / "c", s, LocalSink(ledger.append), run_id="r2").start()
    one.flush(10)
    with pytest.raises(ChainConflictError, match="already used.*Another process is writing"):
        with make_run(tmp_path / "d", s, LocalSink(ledger.append), run_id="r2") as two:
            two.evaluation("x", {"a": 1})
            two.flush(10)
    one.end()
