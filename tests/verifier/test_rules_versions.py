"""Rule-set versions: `eu-ai-act@1` gives, on the bundles recorded before `@2` existed, the very
same exit status, verdict and compliance output (statuses, details, evidence) as it did then;
the bare name means the newest version and every report names the version evaluated."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from factory import build_bundle

from rlhf_verifier.cli import main
from rlhf_verifier.compliance import LATEST, RULE_SETS, resolve

GOLDEN = Path(__file__).resolve().parent / "golden" / "eu-ai-act@1"
EXPECTED = json.loads((GOLDEN / "expected.json").read_text())


def _verify(args, capsys) -> tuple[int, dict, str]:
    code = main([str(a) for a in args] + ["--json"])
    out = capsys.readouterr()
    assert "Traceback" not in out.out + out.err
    return code, (json.loads(out.out) if out.out.strip() else {}), out.err


@pytest.mark.parametrize("case", sorted(EXPECTED))
def test_eu_ai_act_1_is_reproducible(case, capsys):
    e = EXPECTED[case]
    code, rep, _ = _verify([GOLDEN / e["bundle"], *e["args"], "--rules", "eu-ai-act@1"], capsys)
    assert rep["rule_set"] == "eu-ai-act@1"
    assert code == e["exit"] and rep["verdict"] == e["verdict"]
    assert rep["compliance"] == e["compliance"]  # every status, detail and piece of evidence
    # The not-assessed reason names the rule set evaluated; it was requested as "eu-ai-act" then.
    want = e["not_assessed"] and e["not_assessed"].replace("rule set eu-ai-act ", "rule set eu-ai-act@1 ")
    assert rep["not_assessed"] == want


def test_the_recorded_cases_cover_what_at_2_changes():
    """The golden set holds the bundles where @1 and @2 differ, so @1 is pinned where it matters."""
    assert {"reward-run", "dpo-released-reward-save", "dpo-with-reviews", "range", "no-datasets",
            "failed-run", "honest-dpo"} <= set(EXPECTED)
    assert EXPECTED["reward-run"]["verdict"] == "non-compliant"  # @1 judged a reward run by checkpoint.save
    assert EXPECTED["range"]["compliance"] is None


def test_the_bare_name_is_the_newest_version_and_reports_name_it(tmp_path, capsys):
    assert LATEST == {"eu-ai-act": "eu-ai-act@2"} and resolve("eu-ai-act") == "eu-ai-act@2"
    assert RULE_SETS["eu-ai-act"] is RULE_SETS["eu-ai-act@2"]
    b = build_bundle(tmp_path / "b.jsonl")
    code, rep, _ = _verify(b.args("--rules", "eu-ai-act"), capsys)
    assert code == 0 and rep["rule_set"] == "eu-ai-act@2"
    assert [r["id"] for r in rep["compliance"]] == [r.id for r in RULE_SETS["eu-ai-act@2"].rules]
    assert "human-oversight" in [r["id"] for r in rep["compliance"]]
    code = main([str(a) for a in b.args("--rules", "eu-ai-act")])
    assert code == 0 and "Compliance (rule set eu-ai-act@2):" in capsys.readouterr().out
    code, rep, _ = _verify(b.args(), capsys)
    assert code == 0 and rep["rule_set"] is None and rep["compliance"] is None  # no --rules, no rule set


def test_an_unknown_version_cannot_run(tmp_path, capsys):
    b = build_bundle(tmp_path / "b.jsonl")
    code, rep, err = _verify(b.args("--rules", "eu-ai-act@3"), capsys)
    assert code == 2 and rep == {}
    assert "unknown rule set 'eu-ai-act@3' (known: eu-ai-act, eu-ai-act@1, eu-ai-act@2)" in err
