"""The SDK names whose data each opening is (docs/sdk.md "Pseudonyms"), so `erase_subject` on
the real ledger erases one annotator's data across three runs and nothing else."""

from __future__ import annotations

import json

import pytest
import sqlalchemy as sa

from rlhf_ledger.core.errors import EventError
from rlhf_ledger.core.keys import Signer
from rlhf_ledger.sdk import LocalSink, Run, pseudonym
from rlhf_ledger.store import db

KEY = b"team-pseudonym-key-0123456789"


def _run(ledger, signer, run_id, tmp_path) -> Run:
    return Run(log_id="sdk-log", run_id=run_id, signer=signer, sink=LocalSink(ledger.append, log_id="sdk-log"),
               method="dpo", hyperparameters={"beta": 0.1}, base_model={"name": "m", "weights_digest": "sha256:" + "0" * 64},
               spool_dir=tmp_path / run_id, pseudonym_key=KEY, backoff_base=0.01)


def test_one_annotator_erased_across_three_runs(tmp_path, ledger):
    ledger.init_log("sdk-log")
    s = Signer.generate()
    ledger.register_producer("sdk-log", s.public_key)
    for run_id in ("r1", "r2", "r3"):
        with _run(ledger, s, run_id, tmp_path) as run:
            run.annotation_batch(batch_id=f"{run_id}-alice", dataset_id="d", guideline_version="g", annotators=["alice"],
                                 prompts=[f"alice's prompt in {run_id}"], responses=["a"], labels={"good": 1})
            run.annotation_batch(batch_id=f"{run_id}-bob", dataset_id="d", guideline_version="g", annotators=["bob"],
                                 prompts=[f"bob's prompt in {run_id}"], responses=["b"], labels={"good": 1})
            run.human_review("carol", "approve", "model v1", notes=f"carol's notes on {run_id}")
            with pytest.raises(EventError, match="not committed"):
                run.event("custom.note", {"text": "x"}, subjects={"text": "dave"})
    alice, bob, carol = (pseudonym(KEY, x) for x in ("alice", "bob", "carol"))
    so = db.subject_openings.c
    rows = ledger.database.rows(sa.select(so.subject, so.member, so.run_id).order_by(so.subject, so.run_id, so.member))
    assert {(r.subject, r.member) for r in rows} == {(alice, "prompts"), (alice, "responses"), (bob, "prompts"),
                                                    (bob, "responses"), (carol, "notes")}
    assert {r.run_id for r in rows if r.subject == alice} == {"r1", "r2", "r3"}

    e = ledger.erase_subject(alice)
    assert e.entries == {"sdk-log": 3} and e.runs == {"sdk-log": 3}
    texts = {}
    for r in ledger.iter_entries("sdk-log"):
        opened = ledger.read_openings("sdk-log", r.idx)
        if opened is not None:
            texts[(r.run_id, json.loads(r.entry)["event"]["body"].get("batch_id", "review"))] = (opened.openings, opened.erased)
    assert len(texts) == 9
    for run_id in ("r1", "r2", "r3"):
        assert texts[(run_id, f"{run_id}-alice")] == ({}, {"prompts": "subject", "responses": "subject"})
        assert texts[(run_id, f"{run_id}-bob")][0]["prompts"]["value"] == [f"bob's prompt in {run_id}"]
        assert texts[(run_id, "review")] == ({"notes": texts[(run_id, "review")][0]["notes"]}, {})
        assert texts[(run_id, "review")][0]["notes"]["value"] == f"carol's notes on {run_id}"
    assert all(erased == {} for (_, b), (_, erased) in texts.items() if not b.endswith("-alice"))
