"""The compliance collector keeps capped evidence and compact facts (docs/verifier.md, "Memory
per run"), and the rules still read what they read before: counts beyond the evidence cap are
exact, a dataset's malformed values still fail, and only the run bundle's own run is assessed."""

from __future__ import annotations

import json

from factory import build_bundle, run_events

from rlhf_verifier.cli import main


def _rules(b, capsys) -> dict:
    main([str(a) for a in b.args("--rules", "eu-ai-act", "--json")])
    rep = json.loads(capsys.readouterr().out)
    return {r["id"]: r for r in rep["compliance"]}


def test_counts_beyond_the_evidence_cap_are_exact(tmp_path, capsys):
    evs = run_events()
    start = evs[0]
    versions = [("annotation.batch", {**evs[2][1], "batch_id": f"b{i}", "guideline_version": f"v{i}"}) for i in range(130)]
    b = build_bundle(tmp_path / "b.jsonl", events=[start] * 25 + evs[1:2] + versions + evs[3:])
    rules = _rules(b, capsys)
    run = rules["run-records"]["runs"][0]
    assert run["status"] == "fail" and run["detail"].startswith("25 run.start and 1 run.end records")
    assert len(run["evidence"]) == 21  # 20 run.start shown (the cap), and the run.end
    ann = rules["annotation-guidelines"]["runs"][0]
    assert ann["status"] == "pass" and ann["detail"].startswith("130 batch(es)")
    assert ann["detail"].endswith("and more (over 100 distinct)")


def test_a_malformed_dataset_value_still_fails(tmp_path, capsys):
    evs = run_events()
    evs[1] = ("dataset.register", {**evs[1][1], "source": {"url": "https://example.org"}, "size_bytes": "1234"})
    rules = _rules(build_bundle(tmp_path / "b.jsonl", events=evs), capsys)
    run = rules["dataset-provenance"]["runs"][0]
    assert run["status"] == "fail" and "lacks or has malformed: source, size_bytes" in run["detail"]
    assert run["evidence"][0]["source"] == {"url": "https://example.org"}  # shown as recorded


def test_only_the_run_bundles_own_run_is_assessed(tmp_path, capsys):
    b = build_bundle(tmp_path / "b.jsonl")
    lines = b.path.read_text().splitlines()
    header = json.loads(lines[0])
    header["scope"] = {"type": "run", "run_id": "run-2"}  # the events are run-1's: outside the scope
    lines[0] = json.dumps(header)
    b.path.write_text("\n".join(lines) + "\n")
    rules = _rules(b, capsys)
    # nothing of run-1 is collected: every rule is over no run at all (and the bundle is invalid)
    assert all(r["status"] == "fail" and r["runs"] == [{"run_id": None, "status": "fail", "detail": "no run in scope",
                                                         "evidence": []}] for r in rules.values())
