"""LocalSink against the real embedded ledger (ledger.store.Ledger), including a lost acknowledgement."""

from __future__ import annotations

import json

import pytest

from rlhf_ledger.core.keys import Signer
from rlhf_ledger.sdk import DatasetManifest, LocalSink, PermanentDeliveryError, Run, weights_digest

from .helpers import check_chains, tiny_model

store = pytest.importorskip("rlhf_ledger.store.ledger")


@pytest.fixture
def sdk_ledger(ledger):
    """The shared `ledger` fixture (tests/conftest.py): a real Ledger on SQLite and on PostgreSQL."""
    ledger.init_log("sdk-log")
    return ledger


class AckLostOnce:
    """Wraps the real append: the first batch is appended but its reply 'lost' (an outage)."""

    def __init__(self, append):
        self.append, self.lost = append, 0

    def __call__(self, envs):
        out = self.append(envs)
        if self.lost == 0:
            self.lost = len(out)
            raise ConnectionError("reply lost after the ledger appended")
        return out


def test_run_into_real_ledger_with_lost_ack_is_idempotent(tmp_path, sdk_ledger):
    ledger = sdk_ledger
    s = Signer.generate()
    ledger.register_producer("sdk-log", s.public_key, "trainer")
    base = ledger.size("sdk-log")  # the producer's key event comes first (docs/keys.md)
    sink_fn = AckLostOnce(ledger.append)
    m = tiny_model()
    run = Run(log_id="sdk-log", run_id="run-real", signer=s, sink=LocalSink(sink_fn), method="dpo",
              hyperparameters={"beta": 0.1}, base_model={"name": "tiny", "weights_digest": weights_digest(m).digest},
              datasets=[DatasetManifest("ds", "prefs", "internal", "CC0-1.0", "sha256:" + "1" * 64, 10)],
              spool_dir=tmp_path / "spool", pseudonym_key=b"k" * 32, backoff_base=0.01, model=m)
    with run:
        run.annotation_batch(batch_id="b", dataset_id="ds", guideline_version="g1", annotators=["ann-1"],
                             prompts=["p"], responses=["r"], labels={"x": 1})
        run.policy_update(1, 0.5, 0.1, 0.2, 0.05, 1.0, model=m)
        run.checkpoint(1, m)
    assert sink_fn.lost >= 1
    assert any(a.duplicate for a in run.sender.acks)  # the re-sent batch was recognised, not re-appended
    n = ledger.size("sdk-log") - base
    assert n == 6  # every event exactly once, although the first batch was sent twice
    events = [json.loads(ledger.get_entry("sdk-log", i).entry)["event"] for i in range(base, base + n)]
    check_chains(events)
    assert [e["type"] for e in events] == ["dataset.register", "run.start", "annotation.batch", "policy.update",
                                           "checkpoint.save", "run.end"]
    assert sorted({a.index for a in run.sender.acks}) == list(range(base, base + n))
    assert events[-1]["body"]["released_weights_digest"] == weights_digest(m).digest


def test_unregistered_producer_is_refused_by_real_ledger(tmp_path, sdk_ledger):
    ledger = sdk_ledger
    s = Signer.generate()
    run = Run(log_id="sdk-log", run_id="r", signer=s, sink=LocalSink(ledger.append), method="sft",
              hyperparameters={"lr": 1}, base_model={"name": "m", "weights_digest": "sha256:" + "0" * 64},
              spool_dir=tmp_path / "spool")
    with pytest.raises(PermanentDeliveryError, match="unknown_key|not registered|refused"):
        with run:
            pass
    assert (tmp_path / "spool" / "deadletter.jsonl").exists()
