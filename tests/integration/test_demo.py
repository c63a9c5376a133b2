"""The end-to-end demo (`python -m ledger.demo --steps small`) as a subprocess, on its own anvil:
artefacts exist, the bundle verifies with the command printed in the model card (and a tampered
copy does not), the reports and card carry the verdict and the anchors, no secret reaches disk,
and a second run into the same directory starts afresh."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from rlhf_ledger.demo.run import BUNDLE_NAME, MARKER, verifier_argv0

pytestmark = pytest.mark.anvil
REPO = Path(__file__).resolve().parents[2]
PASSPHRASE = "demo-test-passphrase-7f3a9c"


def run_demo(out: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "RLHF_LEDGER_PASSPHRASE": PASSPHRASE}
    env.pop("DATABASE_URL", None)
    return subprocess.run([sys.executable, "-m", "rlhf_ledger.demo", "--out", str(out), "--steps", "small"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=240)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess]:
    out = tmp_path_factory.mktemp("demo") / "out"
    res = run_demo(out)
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-4000:]
    return out, res


def card_front_matter(out: Path) -> dict:
    text = (out / "MODEL_CARD.md").read_text()
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---\n")[1])


def verify(out: Path, bundle: str) -> subprocess.CompletedProcess:
    """The card's command, as a regulator runs it: the one placeholder (the final anchor's block
    hash) filled in from a source they trust -- here the verification report's anchor list,
    checked against the chain by the demo's own verification (the chain itself is gone)."""
    prov = card_front_matter(out)["provenance"]
    cmd = shlex.split(prov["verify"])
    assert cmd[0] == "rlhf-verify" and cmd[1] == BUNDLE_NAME
    # the minimal command: nothing from the audited party but the chain and contract
    assert "--log-key" not in cmd and "--producer-key" not in cmd
    block = prov["verify_block"]["block_number"]
    report = json.loads((out / "verification-report.json").read_text())
    trusted = next(a["block_hash"] for a in report["anchors"] if a["block_number"] == block)
    i = cmd.index("--trusted-block-hash") + 1
    assert cmd[i] == f"0x<hash of block {block}>"
    cmd[i] = trusted
    return subprocess.run(verifier_argv0() + [bundle] + cmd[2:] + ["--json"], cwd=out,
                          capture_output=True, text=True, timeout=120)


def test_artefacts_and_verdict(demo):
    out, res = demo
    for name in ("ledger/ledger.sqlite3", BUNDLE_NAME, "verification-report.html", "verification-report.json",
                 "MODEL_CARD.md", "data/prompts.jsonl", "data/preferences.jsonl", MARKER):
        assert (out / name).is_file(), name
    assert any((out / "content-store").iterdir())
    assert list((out / "checkpoints").glob("policy-step-*.safetensors"))
    assert "VERDICT: VALID" in res.stdout
    report = json.loads((out / "verification-report.json").read_text())
    assert report["verdict"] == "valid" and report["integrity"] == "valid"
    assert {r["status"] for r in report["compliance"]} == {"pass"}, report["compliance"]
    # the default rule set (eu-ai-act = @2), with the simulated reviewer's approval of the release
    assert report["rule_set"] == "eu-ai-act@2" and "human-oversight" in {r["id"] for r in report["compliance"]}
    [reviews] = report["reviews"]
    assert [(v["decision"], v["names_released_weights"], v["notes"]) for v in reviews["reviews"]] == \
        [("approve", True, "committed")]
    assert report["counts"]["anchors"] >= 1 and report["counts"]["events"] == report["counts"]["events_anchored"]


def test_bundle_verifies_with_the_card_command_and_tampering_is_caught(demo):
    out, _ = demo
    ok = verify(out, BUNDLE_NAME)
    assert ok.returncode == 0, ok.stdout[-3000:] + ok.stderr
    assert json.loads(ok.stdout)["verdict"] == "valid"
    lines = (out / BUNDLE_NAME).read_text().splitlines()
    i = next(k for k, line in enumerate(lines) if '"kind":"event"' in line and "policy.update" in line)
    tampered = lines[:i] + [lines[i].replace('"step":', '"step":1', 1)] + lines[i + 1:]
    assert tampered[i] != lines[i]
    (out / "tampered.jsonl").write_text("\n".join(tampered) + "\n")
    bad = verify(out, "tampered.jsonl")
    assert bad.returncode == 1, bad.stdout[-3000:] + bad.stderr
    assert json.loads(bad.stdout)["verdict"] == "invalid"


def test_reports_and_card_name_the_anchors(demo):
    out, _ = demo
    report = json.loads((out / "verification-report.json").read_text())
    html = (out / "verification-report.html").read_text()
    card = (out / "MODEL_CARD.md").read_text()
    prov = card_front_matter(out)["provenance"]
    assert "VALID" in html
    assert "**valid**" in card and "## Provenance" in card
    assert prov["weights_digest"] == prov["checkpoints"][-1]["weights_digest"]
    card_blocks = {a["block_number"] for a in prov["anchors"]}
    for a in report["anchors"]:
        assert a["block_hash"] not in prov["verify"]  # the card never hands out the hash to trust
        assert a["block_hash"] in html
        assert a["block_number"] in card_blocks
    assert prov["verify_block"]["block_number"] == max(report["anchors"], key=lambda a: a["checkpoint_size"])["block_number"]
    assert f"Look up the hash of block **{prov['verify_block']['block_number']}**" in card
    # the log key was read from the contract, the producer key from the log (issue 12)
    assert "the contract's storage at block" in report["trusted"]["log_keys_source"]
    assert "registered in the log's key events" in report["trusted"]["producer_keys_source"]


def test_no_secret_on_disk(demo):
    out, res = demo
    assert PASSPHRASE not in res.stdout + res.stderr
    for path in out.rglob("*"):
        if path.is_file():
            assert PASSPHRASE.encode() not in path.read_bytes(), path


def test_second_run_starts_afresh(demo, tmp_path):
    out, first = demo
    first_run = card_front_matter(out)["provenance"]["run_id"]
    (out / "left-over.txt").write_text("from the previous run")
    res = run_demo(out)
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-4000:]
    assert card_front_matter(out)["provenance"]["run_id"] != first_run
    assert not (out / "left-over.txt").exists()  # the previous output was wiped
    other = tmp_path / "not-a-demo-dir"
    other.mkdir()
    (other / "keep.txt").write_text("precious")
    refused = run_demo(other)
    assert refused.returncode != 0 and (other / "keep.txt").read_text() == "precious"
