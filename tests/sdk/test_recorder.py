"""Recorder: event sequences and bodies, chains, commitments, pseudonyms, failure handling."""

from __future__ import annotations

import json
import math

import pytest
import torch

from rlhf_ledger.core.errors import EventError
from rlhf_ledger.core.events import check_openings, parse_envelope
from rlhf_ledger.core.keys import Signer
from rlhf_ledger.sdk import DatasetManifest, LocalSink, Run, pseudonym, weights_digest

from .helpers import RecordingAppendForTests, check_chains, tiny_model

PKEY = b"team-pseudonym-key-0123456789abcdef"


def make_run(tmp_path, signer, append, **kw):
    m = kw.pop("model_for_base", None) or tiny_model()
    args = dict(
        log_id="log-a", run_id="run-1", signer=signer, sink=LocalSink(append), method="dpo",
        hyperparameters={"lr": 1e-5, "beta": 0.1}, config={"batch_size": 4},
        base_model={"name": "tiny", "weights_digest": weights_digest(m).digest},
        datasets=[DatasetManifest("ds-1", "prefs", "https://example.org/prefs", "CC-BY-4.0", "sha256:" + "ab" * 32, 1234, 10)],
        declared={"privacy_budget": {"epsilon": 4.0, "delta": 1e-5}, "anchoring_delay_seconds": 600, "retention_days": 200},
        code={"repository": "https://example.org/repo.git", "commit": "0" * 40},
        spool_dir=tmp_path / "spool", pseudonym_key=PKEY, backoff_base=0.01,
    )
    args.update(kw)
    return Run(**args)


class Captured:
    """Wraps the emulated append to keep the openings the submissions carried."""

    def __init__(self, inner):
        self.inner, self.openings = inner, {}

    def __call__(self, envs):
        out = inner_out = self.inner(envs)
        for env, r in zip(envs, inner_out, strict=True):
            if "openings" in env:
                self.openings[r["event_id"]] = (env["event"], env["openings"])
        return out


def test_full_run_sequence_bodies_and_chain(tmp_path):
    s = Signer.generate()
    app = RecordingAppendForTests(s)
    cap = Captured(app)
    model = tiny_model()
    with make_run(tmp_path, s, cap, model=model) as run:
        run.annotation_batch(batch_id="b-1", dataset_id="ds-1", guideline_version="g-2.1",
                             annotators=["alice@example.org", "bob"], prompts=["What is 2+2?", "Hi"],
                             responses=[["4", "5"], ["Hello", "Go away"]], labels=["chosen_a", "chosen_b"])
        run.reward_model_update(1, 0.69, accuracy=0.5, grad_norm=2.0)
        with torch.no_grad():
            model[0].weight.add_(0.5)
        run.policy_update(2, 0.4, 0.02, 0.3, 0.1, 1.5, model=model)
        wd = run.checkpoint(2, model)
        run.policy_update(3, 0.3, 0.03, 0.4, 0.1, 1.2, model=model)  # no change since the checkpoint
        run.evaluation("helpfulness", {"win_rate": 0.61}, dataset_id="ds-1", step=3)
        run.bias_examination("bbq", {"bias_score": 0.02}, "no significant bias", private_findings=True)
        run.human_review("reviewer-7", "approve", "release candidate", notes="looks fine")
        run.compute_usage("cpu", 12.5, flops=3.2e18, energy_kwh=0.01)
        eps = run.privacy_spend(1.1, 0.01, 100)
    events = app.events()
    check_chains(events)
    types = [e["type"] for e in events]
    assert types == ["dataset.register", "run.start", "annotation.batch", "reward_model.update", "policy.update",
                     "checkpoint.save", "policy.update", "evaluation", "bias.examination", "human.review",
                     "compute.usage", "privacy.spend", "run.end"]
    assert [e["seq"] for e in events] == list(range(13))
    assert {e["producer"] for e in events} == {s.key_id}
    by = {t: e["body"] for t, e in zip(types, events, strict=True)}
    assert by["dataset.register"] == {"dataset_id": "ds-1", "name": "prefs", "source": "https://example.org/prefs",
                                      "licence": "CC-BY-4.0", "digest": "sha256:" + "ab" * 32, "size_bytes": 1234, "records": 10}
    st = by["run.start"]
    assert st["method"] == "dpo" and st["hyperparameters"] == {"lr": 1e-5, "beta": 0.1} and st["datasets"] == ["ds-1"]
    assert st["declared"] == {"privacy_budget": {"epsilon": 4.0, "delta": 1e-5}, "anchoring_delay_seconds": 600, "retention_days": 200}
    assert st["code"]["commit"] == "0" * 40
    ab = by["annotation.batch"]
    assert ab["items"] == 2 and ab["labels"] == {"chosen_a": 1, "chosen_b": 1} and ab["guideline_version"] == "g-2.1"
    assert set(ab["prompts"]) == {"$commitment"} and set(ab["responses"]) == {"$commitment"}
    pols = [e["body"] for e in events if e["type"] == "policy.update"]
    assert math.isclose(pols[0]["param_delta_norm"], 0.5 * math.sqrt(8 * 16), rel_tol=1e-6)
    assert pols[1]["param_delta_norm"] == 0.0  # measured against the checkpoint's parameters
    assert by["checkpoint.save"]["weights_digest"] == wd.digest == weights_digest(model).digest
    assert by["privacy.spend"]["epsilon"] == eps and by["privacy.spend"]["steps"] == 100
    assert by["compute.usage"]["flops"] == "3200000000000000000"
    assert by["run.end"] == {"status": "completed", "released_weights_digest": wd.digest, "steps": 3}
    # no raw personal data anywhere in the log entries
    blob = json.dumps(app.entries)
    for raw in ("alice@example.org", "reviewer-7", "What is 2+2?", "Go away", "looks fine", "no significant bias"):
        assert raw not in blob


def test_commitments_open_and_pseudonyms_are_keyed(tmp_path):
    s = Signer.generate()
    app = RecordingAppendForTests(s)
    cap = Captured(app)
    with make_run(tmp_path, s, cap) as run:
        run.annotation_batch(batch_id="b", dataset_id="ds-1", guideline_version="g1", annotators=["alice"],
                             prompts=["p1"], responses=["r1"], labels={"a": 1})
        run.human_review("carol", "reject", "ckpt-3", notes="toxic outputs")
    assert len(cap.openings) == 2
    for event, openings in cap.openings.values():
        check_openings(event["body"], openings)  # raises if an opening does not match
        tampered = json.loads(json.dumps(openings))
        k = next(iter(tampered))
        tampered[k]["value"] = "something else"
        with pytest.raises(EventError):
            check_openings(event["body"], tampered)
    ab = next(e for e in app.events() if e["type"] == "annotation.batch")
    assert ab["body"]["annotators"] == [pseudonym(PKEY, "alice")]
    assert pseudonym(PKEY, "alice") != pseudonym(b"another-key-0123456789abcdefghij", "alice")
    assert pseudonym(PKEY, "alice").startswith("anp:") and len(pseudonym(PKEY, "alice")) == 68
    hr = next(e for e in app.events() if e["type"] == "human.review")
    assert hr["body"]["reviewer"] == pseudonym(PKEY, "carol")


def test_raw_annotator_ids_refused_without_a_key(tmp_path):
    s = Signer.generate()
    app = RecordingAppendForTests(s)
    with make_run(tmp_path, s, app, pseudonym_key=None) as run:
        with pytest.raises(ValueError, match="pseudonym"):
            run.annotation_batch(batch_id="b", dataset_id="ds-1", guideline_version="g1", annotators=["alice"],
                                 prompts=["p"], responses=["r"], labels={"a": 1})
        # ready-made pseudonyms are accepted
        run.annotation_batch(batch_id="b", dataset_id="ds-1", guideline_version="g1",
                             annotators=[pseudonym(PKEY, "alice")], prompts=["p"], responses=["r"], labels={"a": 1})
    assert [e["type"] for e in app.events()].count("annotation.batch") == 1


def test_exception_in_block_records_failed_run_end(tmp_path):
    s = Signer.generate()
    app = RecordingAppendForTests(s)
    with pytest.raises(RuntimeError, match="diverged"):
        with make_run(tmp_path, s, app) as run:
            run.policy_update(1, float("nan"), None, None, None, float("inf"))
            raise RuntimeError("loss diverged")
    events = app.events()
    check_chains(events)
    pol = next(e for e in events if e["type"] == "policy.update")
    assert pol["body"]["loss"] == "NaN" and pol["body"]["grad_norm"] == "Infinity" and pol["body"]["kl"] is None
    assert events[-1]["type"] == "run.end" and events[-1]["body"]["status"] == "failed"


def test_invalid_bodies_fail_on_the_calling_thread(tmp_path):
    s = Signer.generate()
    app = RecordingAppendForTests(s)
    with make_run(tmp_path, s, app) as run:
        with pytest.raises(EventError, match="not valid JSON"):
            run.event("custom.thing", {"x": float("nan")})
        with pytest.raises(EventError, match="not valid JSON"):
            run.event("custom.thing", {"x": object()})
        with pytest.raises(EventError, match="too large"):
            run.event("custom.thing", {"x": "y" * 70_000})
        with pytest.raises(EventError, match="dotted"):
            run.event("Bad Type", {})
        run.event("custom.thing", {"x": torch.tensor(1.5)})  # tensors/numpy scalars become numbers
    events = app.events()
    check_chains(events)
    assert [e["body"] for e in events if e["type"] == "custom.thing"] == [{"x": 1.5}]


def test_dp_sgd_updates_carry_dp_steps(tmp_path):
    s = Signer.generate()
    app = RecordingAppendForTests(s)
    with make_run(tmp_path, s, app) as run:
        run.policy_update(1, 0.5, 0.1, 0.2, 1.0, 1.5, dp_steps=1)
        run.policy_update(2, 0.4, 0.1, 0.2, 1.0, 1.5, dp_steps=torch.tensor(2))  # a tensor count is an int
        run.policy_update(3, 0.4, 0.1, 0.2, 1.0, 1.5)  # not a DP-SGD update: claims nothing
        run.reward_model_update(4, 0.6, dp_steps=3)
        for bad in (-1, 2.0, True, "3", 2**53):
            with pytest.raises(ValueError, match="dp_steps must be an integer"):
                run.policy_update(5, 0.4, 0.1, 0.2, 1.0, 1.5, dp_steps=bad)
            with pytest.raises(ValueError, match="dp_steps must be an integer"):
                run.reward_model_update(5, 0.6, dp_steps=bad)
    updates = [(e["type"], e["body"].get("dp_steps")) for e in app.events() if e["type"].endswith(".update")]
    assert updates == [("policy.update", 1), ("policy.update", 2), ("policy.update", None), ("reward_model.update", 3)]


def test_release_digest_and_resume(tmp_path):
    s = Signer.generate()
    app = RecordingAppendForTests(s)
    m = tiny_model(1)
    run = make_run(tmp_path, s, app).start()
    run.policy_update(1, 1.0, 0.0, 0.0, 0.0, 0.0)
    run.release(m)
    run.flush(10)
    run.sender.close(timeout=0)  # the process dies before run.end
    # the same run re-opened from the same spool continues the chain without a second run.start
    run2 = make_run(tmp_path, s, app).start()
    assert run2.resumed
    run2.evaluation("late-eval", {"x": 1})
    run2.release(m)
    run2.end("completed")
    events = app.events()
    check_chains(events)
    assert [e["type"] for e in events].count("run.start") == 1
    assert events[-2]["type"] == "evaluation"
    assert events[-1]["body"]["released_weights_digest"] == weights_digest(m).digest
    with pytest.raises(RuntimeError, match="ended"):
        run2.evaluation("after", {})


def test_spool_is_for_one_run_and_producer(tmp_path):
    s = Signer.generate()
    app = RecordingAppendForTests(s)
    make_run(tmp_path, s, app).start().end()
    with pytest.raises(Exception, match="spool belongs to"):
        make_run(tmp_path, Signer.generate(), app).start()
