"""eu-ai-act@2: rules that fit the run (issue 14, item 6).

Each behaviour has its attack beside the honest case, on bundles built with the ledger's own
code (tests/verifier/factory.py): a reward-model run is judged by its reward_model.save, a policy
run is not let off by a reward model's digest, human oversight needs a signed approval of the
released weights before run.end and fails on a rejection, and an event or range bundle gets
every rule not_applicable with the reason and no exit 0.
"""

from __future__ import annotations

import json

import pytest
from factory import (
    REVIEWER,
    REWARD_DIGEST,
    build_bundle,
    read_records,
    review,
    reward_run_events,
    run_events,
    write_records,
)

from rlhf_verifier.cli import main
from rlhf_verifier.compliance.reviews import SUBJECT_CAP

POLICY_DIGEST = "sha256:" + "ab" * 32  # run_events()' checkpoint.save


def _verify(args, capsys) -> tuple[int, dict]:
    code = main([str(a) for a in args] + ["--json"])
    out = capsys.readouterr()
    assert "Traceback" not in out.out + out.err and "internal error" not in out.err, out.err
    return code, json.loads(out.out)


def _rule(rep: dict, rule_id: str) -> dict:
    return next(r for r in rep["compliance"] if r["id"] == rule_id)


def _detail(rep: dict, rule_id: str) -> str:
    return _rule(rep, rule_id)["runs"][0]["detail"]


def _others_pass(rep: dict, *failing: str) -> None:
    """Everything but `failing` passes or is not applicable with a reason."""
    for r in rep["compliance"]:
        if r["id"] not in failing:
            assert r["status"] in ("pass", "not_applicable"), (r["id"], r["runs"])
            assert all(x["detail"] for x in r["runs"])


# --- the run's method decides which save is released ------------------------------------------


def test_a_reward_model_run_is_judged_by_its_reward_model_save(tmp_path, capsys):
    b = build_bundle(tmp_path / "b.jsonl", events=reward_run_events())
    code, rep = _verify(b.args("--rules", "eu-ai-act"), capsys)
    assert code == 0 and rep["verdict"] == "valid", rep["compliance"]
    rw = _rule(rep, "released-weights")
    assert rw["status"] == "pass" and "last anchored reward_model.save (reward-model run 'reward')" in rw["runs"][0]["detail"]
    assert {"type": "reward_model.save", "weights_digest": REWARD_DIGEST, "anchored": True}.items() <= \
        rw["runs"][0]["evidence"][1].items()
    assert "reward-model run: its released weights are its last reward_model.save" in _detail(rep, "training-method")
    _others_pass(rep)
    # eu-ai-act@1 knew only checkpoint.save: the same honest run fails there (kept as it was)
    code, rep = _verify(b.args("--rules", "eu-ai-act@1"), capsys)
    assert code == 1 and _rule(rep, "released-weights")["status"] == "fail"


def test_a_reward_run_cannot_release_a_policy_checkpoint(tmp_path, capsys):
    evs = reward_run_events(released=POLICY_DIGEST)
    evs.insert(5, ("checkpoint.save", {"step": 2, "weights_digest": POLICY_DIGEST, "tensor_root": "sha256:" + "ef" * 32}))
    b = build_bundle(tmp_path / "b.jsonl", events=evs)
    code, rep = _verify(b.args("--rules", "eu-ai-act"), capsys)
    assert code == 1 and rep["verdict"] == "non-compliant"
    d = _detail(rep, "released-weights")
    assert d.startswith("released weights digest differs from the last anchored reward_model.save (reward-model run)")
    assert "it equals a checkpoint.save, which names the policy" in d
    _others_pass(rep, "released-weights")


def test_a_policy_run_cannot_release_its_reward_model(tmp_path, capsys):
    """A DPO run whose released digest matches only a reward_model.save of the run fails."""
    evs = run_events(3)
    i = next(k for k, (t, _) in enumerate(evs) if t == "checkpoint.save")
    evs.insert(i + 1, ("reward_model.save", {"step": 3, "weights_digest": REWARD_DIGEST, "tensor_root": "sha256:" + "5b" * 32}))
    evs[-2] = review("approve", REWARD_DIGEST)
    evs[-1] = ("run.end", {"status": "completed", "released_weights_digest": REWARD_DIGEST, "steps": 3})
    b = build_bundle(tmp_path / "b.jsonl", events=evs)
    code, rep = _verify(b.args("--rules", "eu-ai-act"), capsys)
    assert code == 1 and rep["verdict"] == "non-compliant" and rep["compliance_failed"] == ["released-weights"]
    d = _detail(rep, "released-weights")
    assert d.startswith("released weights digest differs from the last anchored checkpoint.save (policy run)")
    assert "it equals a reward_model.save, which names the reward model, not what a 'dpo' run releases" in d
    assert 'a reward-model run records method "reward"' in d
    ev = _rule(rep, "released-weights")["runs"][0]["evidence"]
    assert any(e.get("type") == "reward_model.save" and e["weights_digest"] == REWARD_DIGEST for e in ev)


def test_a_policy_run_that_also_trains_a_reward_model_passes(tmp_path, capsys):
    """The demo's shape: a reward model is trained and saved in the run, the policy is released."""
    evs = run_events(3)
    i = next(k for k, (t, _) in enumerate(evs) if t == "checkpoint.save")
    evs.insert(i, ("reward_model.save", {"step": 1, "weights_digest": REWARD_DIGEST, "tensor_root": "sha256:" + "5b" * 32}))
    b = build_bundle(tmp_path / "b.jsonl", events=evs)
    code, rep = _verify(b.args("--rules", "eu-ai-act"), capsys)
    assert code == 0, rep["compliance"]
    assert "last anchored checkpoint.save (policy run 'dpo')" in _detail(rep, "released-weights")


def test_a_run_without_a_single_run_start_has_no_known_release_type(tmp_path, capsys):
    evs = run_events(3)
    evs.insert(1, evs[0])  # two run.start records
    b = build_bundle(tmp_path / "b.jsonl", events=evs)
    code, rep = _verify(b.args("--rules", "eu-ai-act"), capsys)
    assert code == 1 and "which save record names the released weights" in _detail(rep, "released-weights")


def test_a_run_declaring_no_datasets_fails_dataset_provenance_at_2(tmp_path, capsys):
    evs = run_events(3)
    evs[0][1]["datasets"] = []
    b = build_bundle(tmp_path / "b.jsonl", events=evs)
    code, rep = _verify(b.args("--rules", "eu-ai-act", "--max-delta", "1e-5"), capsys)
    assert code == 1 and _rule(rep, "dataset-provenance")["status"] == "fail"
    assert _detail(rep, "dataset-provenance").startswith("run.start lists no datasets: every training method (dpo)")
    code, rep = _verify(b.args("--rules", "eu-ai-act@1", "--max-delta", "1e-5"), capsys)
    assert code == 0 and _rule(rep, "dataset-provenance")["status"] == "not_applicable"


# --- human oversight (Art. 14) --------------------------------------------------------------------


def test_an_approved_release_passes_human_oversight(tmp_path, capsys):
    b = build_bundle(tmp_path / "b.jsonl", producers=2)  # the review is signed by the second producer key
    code, rep = _verify(b.args("--rules", "eu-ai-act"), capsys)
    assert code == 0 and rep["verdict"] == "valid"
    ho = _rule(rep, "human-oversight")
    assert ho["status"] == "pass" and ho["reference"] == "Art. 14(1), 14(4); Annex IV 2(e)"
    run = ho["runs"][0]
    assert run["detail"].startswith("1 human.review approval(s) of the released weights before run.end, signed by a "
                                    "trusted producer key")
    approval = run["evidence"][0]
    assert approval["type"] == "human.review" and approval["decision"] == "approve"
    assert approval["subject"] == POLICY_DIGEST and approval["reviewer"] == REVIEWER and len(approval["event_id"]) == 64
    assert run["evidence"][-1]["type"] == "run.end"


def test_a_missing_review_fails_at_2_but_not_at_1(tmp_path, capsys):
    b = build_bundle(tmp_path / "b.jsonl", events=run_events(3, review_decision=None))
    code, rep = _verify(b.args("--rules", "eu-ai-act"), capsys)
    assert code == 1 and rep["verdict"] == "non-compliant" and rep["compliance_failed"] == ["human-oversight"]
    assert _detail(rep, "human-oversight") == (
        f'no human.review approving the released weights (decision "approve", subject {POLICY_DIGEST}) before '
        "run.end; 0 review record(s) in the run")
    code, rep = _verify(b.args("--rules", "eu-ai-act@1"), capsys)
    assert code == 0 and rep["verdict"] == "valid" and "human-oversight" not in [r["id"] for r in rep["compliance"]]


def test_a_rejected_release_fails_even_beside_an_approval(tmp_path, capsys):
    b = build_bundle(tmp_path / "b.jsonl", events=run_events(3, review_decision="reject"))
    code, rep = _verify(b.args("--rules", "eu-ai-act"), capsys)
    assert code == 1 and rep["compliance_failed"] == ["human-oversight"]
    assert _detail(rep, "human-oversight").startswith("1 human.review record(s) reject the released weights")
    ev = _rule(rep, "human-oversight")["runs"][0]["evidence"]
    assert [e["decision"] for e in ev] == ["reject"] and ev[0]["subject"] == POLICY_DIGEST
    # a second reviewer's approval does not override the rejection of the same weights
    evs = run_events(3, review_decision="reject")
    evs.insert(-1, review("approve", POLICY_DIGEST, reviewer="anp:" + "55" * 32))
    b = build_bundle(tmp_path / "b2.jsonl", events=evs)
    code, rep = _verify(b.args("--rules", "eu-ai-act"), capsys)
    assert code == 1 and rep["compliance_failed"] == ["human-oversight"]


def test_an_approval_of_something_else_does_not_count(tmp_path, capsys):
    # approving an earlier candidate (another digest), or a free-text subject, is not approving the release
    evs = run_events(3, review_decision=None)
    evs.insert(-1, review("approve", "sha256:" + "12" * 32))
    evs.insert(-1, review("approve", f"release of {POLICY_DIGEST}"))
    evs.insert(-1, review("reject", "sha256:" + "13" * 32))  # a rejected earlier candidate is no failure
    b = build_bundle(tmp_path / "b.jsonl", events=evs)
    code, rep = _verify(b.args("--rules", "eu-ai-act"), capsys)
    assert code == 1 and rep["compliance_failed"] == ["human-oversight"]
    assert "3 review record(s) in the run" in _detail(rep, "human-oversight")
    assert [v["names_released_weights"] for v in rep["reviews"][0]["reviews"]] == [False, False, False]


def test_an_approval_after_run_end_does_not_count(tmp_path, capsys):
    evs = run_events(3, review_decision=None)
    evs.append(review("approve", POLICY_DIGEST))  # the ledger refuses this; the verifier does not rely on it
    b = build_bundle(tmp_path / "b.jsonl", events=evs)
    code, rep = _verify(b.args("--rules", "eu-ai-act"), capsys)
    assert code == 1 and _rule(rep, "human-oversight")["status"] == "fail"
    assert "no human.review approving the released weights" in _detail(rep, "human-oversight")


@pytest.mark.parametrize("body", [
    {"reviewer": REVIEWER, "subject": POLICY_DIGEST},  # no decision
    {"reviewer": "", "decision": "approve", "subject": POLICY_DIGEST},
    {"reviewer": REVIEWER, "decision": "approve", "subject": 7},
])
def test_a_malformed_review_fails(tmp_path, capsys, body):
    evs = run_events(3)
    evs.insert(-2, ("human.review", body))
    b = build_bundle(tmp_path / "b.jsonl", events=evs)
    code, rep = _verify(b.args("--rules", "eu-ai-act"), capsys)
    assert code == 1 and rep["compliance_failed"] == ["human-oversight"]
    assert _detail(rep, "human-oversight") == "1 malformed human.review record(s)"
    assert _rule(rep, "human-oversight")["runs"][0]["evidence"][0]["problem"] == \
        "needs reviewer, decision and subject (non-empty strings)"


def test_reviews_of_too_many_subjects_are_not_guessed(tmp_path, capsys):
    """Memory per run is bounded: past SUBJECT_CAP distinct subjects, an approval that was not
    kept is not assumed; the rule fails saying why."""
    evs = run_events(3, review_decision=None)
    extra = [review("comment", f"sha256:{k:064x}") for k in range(SUBJECT_CAP)] + [review("approve", POLICY_DIGEST)]
    evs[-1:-1] = extra
    b = build_bundle(tmp_path / "b.jsonl", events=evs)
    code, rep = _verify(b.args("--rules", "eu-ai-act"), capsys)
    assert code == 1 and rep["compliance_failed"] == ["human-oversight"]
    assert "were not kept (more than 256 distinct subjects), so approval cannot be shown" in _detail(rep, "human-oversight")
    assert rep["reviews"][0]["count"] == SUBJECT_CAP + 1 and len(rep["reviews"][0]["reviews"]) == 20


def test_a_run_that_released_nothing_needs_no_release_review(tmp_path, capsys):
    evs = run_events(3, review_decision=None)
    evs[-1] = ("run.end", {"status": "failed", "released_weights_digest": None, "steps": 3})
    b = build_bundle(tmp_path / "b.jsonl", events=evs)
    code, rep = _verify(b.args("--rules", "eu-ai-act"), capsys)
    assert code == 0 and _rule(rep, "human-oversight")["status"] == "not_applicable"
    assert _detail(rep, "human-oversight") == \
        "run did not complete and released no weights: there is no release to oversee"
    # a completed run must name what it released
    evs[-1] = ("run.end", {"status": "completed", "released_weights_digest": None, "steps": 3})
    b = build_bundle(tmp_path / "b2.jsonl", events=evs)
    code, rep = _verify(b.args("--rules", "eu-ai-act"), capsys)
    assert code == 1 and "run.end names no released weights" in _detail(rep, "human-oversight")


# --- reviews in every report ----------------------------------------------------------------------


def test_reviews_appear_in_the_json_text_and_html_reports(tmp_path, capsys):
    evs = run_events(3)
    evs.insert(-2, review("reject", "sha256:" + "12" * 32, reviewer="anp:" + "44" * 32))
    b = build_bundle(tmp_path / "b.jsonl", events=evs)
    html = tmp_path / "r.html"
    code, rep = _verify(b.args("--html", html), capsys)  # shown without --rules too
    assert code == 0
    [run] = rep["reviews"]
    assert run["run_id"] == "run-1" and run["count"] == 2
    first, second = run["reviews"]
    assert (first["decision"], first["names_released_weights"], first["notes"]) == ("reject", False, "committed")
    assert (second["decision"], second["names_released_weights"], second["subject"]) == ("approve", True, POLICY_DIGEST)
    assert second["index"] == len(evs) - 2 and len(second["event_id"]) == 64 and second["passed_integrity_checks"]
    records = {o["index"]: o for o in read_records(b) if o["kind"] == "event"}
    assert records[second["index"]]["envelope"]["event"]["type"] == "human.review"
    code = main([str(a) for a in b.args("--rules", "eu-ai-act")])
    text = capsys.readouterr().out
    assert code == 0 and "Human reviews of run 'run-1' (2 recorded):" in text
    assert f"event {second['index']} ({second['event_id']}): approve of the released weights by reviewer anp:7777" in text
    assert f"event {first['index']} ({first['event_id']}): reject of subject sha256:1212" in text
    page = html.read_text()
    assert "Human reviews of run" in page and second["event_id"] in page and first["event_id"] in page
    assert page.index("Human reviews of run") < page.index("Anchor timeline")


# --- event and range bundles: not applicable, with the reason, never exit 0 -----------------------


def _window(b, kind: str) -> int:
    """Rewrite a run bundle as an event bundle (the human.review alone) or a range bundle."""
    objs = [o for o in read_records(b) if o["kind"] != "run"]
    events = [o for o in objs if o["kind"] == "event"]
    if kind == "event":
        keep = next(o for o in events if o["envelope"]["event"]["type"] == "human.review")
        objs = [o for o in objs if o["kind"] != "event" or o is keep]
        objs[0]["scope"] = {"type": "event", "start": keep["index"], "end": keep["index"] + 1}
    else:
        objs[0]["scope"] = {"type": "range", "start": 0, "end": len(events)}
    write_records(b, objs)
    return len(events)


@pytest.mark.parametrize("kind", ["event", "range"])
def test_run_scoped_rules_over_a_window_are_not_applicable_and_not_valid(tmp_path, capsys, kind):
    b = build_bundle(tmp_path / "b.jsonl")
    _window(b, kind)
    code, rep = _verify(b.args(), capsys)
    assert code == 0 and rep["verdict"] == "valid"  # integrity alone is proven
    html = tmp_path / "r.html"
    code, rep = _verify(b.args("--rules", "eu-ai-act", "--html", html), capsys)
    assert code == 1 and rep["verdict"] == "not-assessed" and rep["integrity"] == "valid"
    reason = rep["not_assessed"]
    assert reason.startswith(f"a {kind} bundle is a window of the log: it cannot show a whole run")
    assert "rule set eu-ai-act@2 was not assessed" in reason
    assert len(rep["compliance"]) == 11 and rep["compliance_failed"] == []
    for r in rep["compliance"]:
        assert r["status"] == "not_applicable" and r["runs"] == [
            {"run_id": None, "status": "not_applicable", "detail": reason, "evidence": []}]
    assert rep["reviews"][0]["reviews"][0]["decision"] == "approve"  # the window's review is still shown
    page = html.read_text()
    assert "RULES NOT ASSESSED" in page and page.count("not_applicable") >= 11
    code = main([str(a) for a in b.args("--rules", "eu-ai-act")])
    text = capsys.readouterr().out
    assert code == 1 and "INTEGRITY VALID, RULES NOT ASSESSED" in text and f"Rules not assessed: {reason}" in text
    assert text.count("NOT_APPLICABLE") == 11 and text.count(f"every run: {reason}") == 11


def test_the_review_listing_is_bounded_over_many_runs():
    """A window of the log may touch very many runs: the reports list the reviews of the first
    100 and count the rest."""
    from rlhf_verifier.compliance import Collector
    from rlhf_verifier.compliance.reviews import RUNS_SHOWN, listing

    c = Collector()
    for k in range(RUNS_SHOWN + 7):
        c.feed(k, bytes.fromhex(f"{k:064x}"), f"run-{k:04d}", "human.review", dict(review("approve", POLICY_DIGEST)[1]),
               True, True, 1.0)
    shown, omitted = listing(c.runs, {"run-0000": (9, POLICY_DIGEST)})
    assert len(shown) == RUNS_SHOWN and omitted == 7
    assert shown[0]["reviews"][0]["names_released_weights"] and not shown[1]["reviews"][0]["names_released_weights"]
    # runs the rules do not assess (an event or range bundle): kept for the first RUNS_SHOWN runs only
    w = Collector()
    for k in range(RUNS_SHOWN + 7):
        w.review_only(k, bytes.fromhex(f"{k:064x}"), f"run-{k:04d}", dict(review("approve", POLICY_DIGEST)[1]), True)
    assert len(w.review_runs) == RUNS_SHOWN and w.review_records_omitted == 7 and not w.runs
