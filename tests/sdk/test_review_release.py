"""The SDK side of eu-ai-act@2: which weights a run releases by default (its method's save type),
and `Run.review_release`, the human.review of those weights that `human-oversight` asks for."""

from __future__ import annotations

import pytest

from rlhf_ledger.core.keys import Signer
from rlhf_ledger.sdk import LocalSink, Run, pseudonym, weights_digest

from .helpers import RecordingAppendForTests, tiny_model

PKEY = b"team-pseudonym-key-0123456789abcdef"


def _run(tmp_path, signer, append, method: str) -> Run:
    m = tiny_model()
    return Run(log_id="log-a", run_id=f"run-{method}", signer=signer, sink=LocalSink(append), method=method,
               hyperparameters={"lr": 1e-5}, base_model={"name": "tiny", "weights_digest": weights_digest(m).digest},
               spool_dir=tmp_path / method, pseudonym_key=PKEY, backoff_base=0.01)


def _by_type(app: RecordingAppendForTests, typ: str) -> list[dict]:
    return [e["body"] for e in app.events() if e["type"] == typ]


def test_a_reward_run_releases_and_reviews_its_reward_model(tmp_path):
    s = Signer.generate()
    app = RecordingAppendForTests(s)
    rm, other = tiny_model(1), tiny_model(2)
    with _run(tmp_path, s, app, "reward") as run:
        assert run.release_type == "reward_model.save"
        with pytest.raises(ValueError, match="no released weights to review yet: call run.release"):
            run.review_release("alice")
        run.reward_model_save(5, rm)
        run.checkpoint(5, other)  # not what a reward run releases, although it came last
        assert run.released_digest == weights_digest(rm).digest
        run.review_release("alice", notes="calibration looks right")
    [review] = _by_type(app, "human.review")
    assert review["subject"] == weights_digest(rm).digest and review["decision"] == "approve"
    assert review["reviewer"] == pseudonym(PKEY, "alice") and "$commitment" in review["notes"]
    assert _by_type(app, "run.end")[0]["released_weights_digest"] == weights_digest(rm).digest


def test_a_policy_run_releases_its_last_checkpoint_even_if_a_reward_model_was_saved_after(tmp_path):
    s = Signer.generate()
    app = RecordingAppendForTests(s)
    policy, rm = tiny_model(1), tiny_model(2)
    with _run(tmp_path, s, app, "dpo") as run:
        assert run.release_type == "checkpoint.save"
        run.checkpoint(3, policy)
        run.reward_model_save(3, rm)
        run.review_release("bob", "reject")
    assert _by_type(app, "human.review")[0]["subject"] == weights_digest(policy).digest
    assert _by_type(app, "run.end")[0]["released_weights_digest"] == weights_digest(policy).digest


def test_an_explicit_release_is_what_is_reviewed(tmp_path):
    s = Signer.generate()
    app = RecordingAppendForTests(s)
    with _run(tmp_path, s, app, "sft") as run:
        run.checkpoint(1, tiny_model(1))
        run.release(digest="sha256:" + "c3" * 32)
        run.review_release("carol")
    assert _by_type(app, "human.review")[0]["subject"] == "sha256:" + "c3" * 32


@pytest.mark.parametrize("args", [("", "approve", "x"), ("r", "", "x"), ("r", "approve", ""), ("r", None, "x")])
def test_human_review_refuses_empty_members(tmp_path, args):
    s = Signer.generate()
    app = RecordingAppendForTests(s)
    with _run(tmp_path, s, app, "dpo") as run:
        with pytest.raises(ValueError, match="human_review: .* must be a non-empty string"):
            run.human_review(*args)
    assert _by_type(app, "human.review") == []
